"""How every ``flywheel`` command reports an error it expected: one red line on stderr, exit code 1."""

from __future__ import annotations

import typer


def fail(exc: Exception) -> None:
    """Print ``error: <exc>`` to stderr and exit 1 (raises ``typer.Exit``). Messages never carry user text."""
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(1)
