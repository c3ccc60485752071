"""A dataset version's held-out split as evaluation input (pandas only: it also runs where the lake
libraries are not installed, e.g. on a GPU machine)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune.errors import EvalError


def held_out(folder: Path, split: str, limit: int | None) -> pd.DataFrame:
    """The split as columns ``prompt`` (messages), ``chosen`` (text), ``rejected`` (text or None).
    Raises EvalError when the split is missing or empty."""
    path = folder / "data" / f"{split}.parquet"
    if not path.exists():
        raise EvalError(f"no {split} split at {path}")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise EvalError(f"the {split} split of {folder.name} is empty")
    frame = frame.head(limit) if limit else frame
    plain = lambda msgs: [{"role": m["role"], "content": m["content"]} for m in msgs]  # noqa: E731
    if "messages" in frame:
        return pd.DataFrame({"prompt": [plain(m[:-1]) for m in frame["messages"]],
                             "chosen": [m[-1]["content"] for m in frame["messages"]], "rejected": None})
    return pd.DataFrame({"prompt": [plain(p) for p in frame["prompt"]],
                         "chosen": [c[0]["content"] for c in frame["chosen"]],
                         "rejected": [r[0]["content"] for r in frame["rejected"]] if "rejected" in frame else None})
