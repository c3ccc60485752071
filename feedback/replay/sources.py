"""The replayable real data sets, by name, and where their files are.

``SOURCES`` maps a source name to its ``events(data_dir, *, project, replay_time)`` function; each
reads its own folder under the data root (see ``FOLDERS``) and yields version-1 event dicts that
pass :func:`feedback.contracts.validate`, every interaction before the feedback that refers to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from feedback.errors import ReplayError
from feedback.replay import feedbackqa, hh_rlhf, oasst1, tulu

_MODULES = (oasst1, tulu, hh_rlhf, feedbackqa)
SOURCES: dict[str, Callable[..., Iterator[dict]]] = {m.NAME: m.events for m in _MODULES}
FOLDERS: dict[str, str] = {m.NAME: m.FOLDER for m in _MODULES}


def default_data_dir() -> Path:
    """The data root: ``$FLYWHEEL_DATA_DIR`` if set, else the first existing of ``./../shared/data``
    and ``<repo root>/../shared/data``, resolved. Raises ReplayError when there is none."""
    env = os.environ.get("FLYWHEEL_DATA_DIR")
    if env:
        path = Path(env).resolve()
        if not path.is_dir():
            raise ReplayError(f"FLYWHEEL_DATA_DIR={env} is not a folder")
        return path
    candidates = [Path.cwd() / "../shared/data", Path(__file__).resolve().parents[2] / "../shared/data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ReplayError(f"no data folder found (tried {tried}); set FLYWHEEL_DATA_DIR")


def iter_events(names: list[str], data_dir: Path, *, project: str, replay_time: datetime) -> Iterator[tuple[str, dict]]:
    """``(source name, event)`` for each source in ``names``, in that order.

    All names and folders are checked at the call, before any event is read: raises ReplayError for
    an unknown name or a missing ``<data_dir>/<folder>``.
    """
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ReplayError(f"unknown source(s) {unknown}; known: {list(SOURCES)}")
    for name in names:
        folder = Path(data_dir) / FOLDERS[name]
        if not folder.is_dir():
            raise ReplayError(f"source {name!r}: folder {folder} not found")
    return _chain(names, Path(data_dir), project, replay_time)


def _chain(names: list[str], data_dir: Path, project: str, replay_time: datetime) -> Iterator[tuple[str, dict]]:
    for name in names:
        for event in SOURCES[name](data_dir, project=project, replay_time=replay_time):
            yield name, event
