"""Flywheel's one training script: TRL ``SFTTrainer`` / ``DPOTrainer`` with a PEFT LoRA adapter.

It runs unchanged in two places, so it imports nothing from Flywheel (only torch, transformers, trl,
peft, datasets):

* **SageMaker**, in the Hugging Face PyTorch training container: SageMaker copies this file into
  the container and runs ``python train.py --key value ...`` with the job's hyperparameters; the
  dataset channels are folders named by ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION``, the model
  goes to ``SM_MODEL_DIR`` (tarred to S3 as ``model.tar.gz``) and other output to
  ``SM_OUTPUT_DATA_DIR`` (source: the SageMaker training toolkit's environment variables,
  github.com/aws/sagemaker-training-toolkit, ``ENVIRONMENT_VARIABLES.md``);
* **locally** (``flywheel finetune launch --backend local``), with the same flags and those
  variables pointing at local folders; on CPU (``use_cpu``, float32) or on a GPU where one is present
  (bfloat16 where the GPU supports it).

Input: a channel folder with the dataset version's split as Parquet (``data/<split>.parquet``, what
Flywheel's jobs upload) or JSON lines (``flywheel dataset export --to sagemaker``), in TRL's columns:
``messages`` for ``--method sft``; ``prompt``/``chosen``/``rejected`` (conversational) for ``--method
dpo``. Other columns are dropped.

Output under the model dir: ``adapter/`` (the LoRA adapter), ``merged/`` (base + adapter merged,
with the tokenizer: a plain model any transformers/vLLM loader takes, unless ``--merge false``),
``metrics.json`` (the loss curve as TRL logged it, train loss, steps, steps/s, seconds, peak memory
in MB, device, library versions). SFT trains on the assistant turns only where the tokenizer's chat
template carries ``{% generation %}`` markers (Flywheel's SmolLM2 folder does); otherwise on
the whole conversation. DPO without ``ref_model`` uses the base with the adapter disabled as the
reference (TRL's behaviour with a ``peft_config``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

COLUMNS = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"]}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def parser() -> argparse.ArgumentParser:
    """The script's flags: SageMaker passes each hyperparameter as ``--name value``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=sorted(COLUMNS), required=True)
    p.add_argument("--model_name_or_path", required=True, help="local folder or hub id")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many optimiser steps (-1: epochs)")
    p.add_argument("--learning_rate", type=float, default=2e-4)
    p.add_argument("--per_device_train_batch_size", type=int, default=4)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--max_length", type=int, default=512, help="tokens per example (prompt + answer), truncated")
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=32)
    p.add_argument("--lora_dropout", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging_steps", type=int, default=1)
    p.add_argument("--merge", type=_bool, default=True)
    p.add_argument("--train_dir", default=os.environ.get("SM_CHANNEL_TRAIN"))
    p.add_argument("--model_dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    p.add_argument("--output_data_dir", default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    return p


def load_split(folder: str, method: str):
    """The split in ``folder`` (``*.jsonl`` or ``*.parquet``) as a ``datasets.Dataset`` with only
    the method's TRL columns. Raises SystemExit with a message when there is no file or no row."""
    from datasets import load_dataset

    files = sorted(Path(folder).glob("*.jsonl")) or sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise SystemExit(f"no *.jsonl or *.parquet in {folder}")
    kind = "json" if files[0].suffix == ".jsonl" else "parquet"
    ds = load_dataset(kind, data_files=[str(f) for f in files], split="train")
    missing = [c for c in COLUMNS[method] if c not in ds.column_names]
    if missing:
        raise SystemExit(f"{folder}: --method {method} needs columns {COLUMNS[method]}, missing {missing}")
    if len(ds) == 0:
        raise SystemExit(f"{folder}: no rows")
    return ds.select_columns(COLUMNS[method])


def _peak_memory_mb(device: str) -> dict:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() // 2**20
    return out


def train(args: argparse.Namespace) -> dict:
    """Train, save adapter / merged model / metrics under ``args.model_dir``; return the metrics."""
    import peft
    import torch
    import transformers
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not args.train_dir:
        raise SystemExit("no training data: pass --train_dir or set SM_CHANNEL_TRAIN")
    transformers.set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    dataset = load_split(args.train_dir, args.method)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path,
                                                 dtype=torch.bfloat16 if bf16 else torch.float32)
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    out = Path(args.model_dir)
    common = dict(output_dir=str(out / "checkpoints"), num_train_epochs=args.epochs, max_steps=args.max_steps,
                  learning_rate=args.learning_rate, per_device_train_batch_size=args.per_device_train_batch_size,
                  gradient_accumulation_steps=args.gradient_accumulation_steps, max_length=args.max_length,
                  logging_steps=args.logging_steps, save_strategy="no", report_to="none", seed=args.seed,
                  use_cpu=device == "cpu", bf16=bf16, gradient_checkpointing=False, lr_scheduler_type="cosine",
                  warmup_steps=0.03, dataloader_num_workers=0, disable_tqdm=True)
    if args.method == "sft":
        template = tokenizer.chat_template or ""
        config = trl.SFTConfig(**common, assistant_only_loss="{% generation %}" in template)
        trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=lora)
    else:
        config = trl.DPOConfig(**common, beta=args.beta)
        trainer = trl.DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=lora)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))
    if args.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
    metrics = {
        "method": args.method, "rows": len(dataset), "steps": result.global_step, "train_loss": result.training_loss,
        "seconds": round(seconds, 2), "steps_per_s": round(result.global_step / seconds, 4) if seconds else None,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "bf16": bf16,
        **_peak_memory_mb(device),
        "log_history": trainer.state.log_history,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "peft": peft.__version__},
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("train_dir", "model_dir", "output_data_dir")},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if args.output_data_dir:
        Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_data_dir) / "metrics.json").write_text(json.dumps(metrics, default=str) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "log_history"}, default=str), flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python train.py --method sft --model_name_or_path ... [--key value ...]``."""
    args = parser().parse_args(argv if argv is not None else sys.argv[1:])
    Path(args.model_dir).mkdir(parents=True, exist_ok=True)
    train(args)


if __name__ == "__main__":
    main()
