"""Log-likelihood of answers under a causal LM, and greedy generation, in batches (for evaluation).

A (prompt, response) pair is rendered with the tokenizer's chat template: the prompt messages with
the generation prompt (``<|im_start|>assistant\\n`` for ChatML), then the response and the turn's end
token(s). The response's tokens are the rendered conversation's tokens after the prompt's; their
log-probabilities are summed (natural log, nats). When the pair exceeds ``max_length`` tokens the
response is cut to ``max_length - 32`` tokens at most and the prompt is cut from the left, so the
model always sees the text right before the response.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Message = dict[str, str]


@dataclass
class Scored:
    """Per pair: ``logp`` the summed log-probability of the response tokens (nats, ≤ 0) and
    ``tokens`` their count; arrays of shape (n,)."""

    logp: np.ndarray
    tokens: np.ndarray


def _ids(tokenizer, messages: list[Message], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                        return_dict=True)
    return list(out["input_ids"])


def encode_pair(tokenizer, prompt: list[Message], response: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + response and the index where the response starts."""
    head = _ids(tokenizer, prompt, True)
    full = _ids(tokenizer, prompt + [{"role": "assistant", "content": response}], False)
    if full[: len(head)] != head:  # a template that renders the prompt differently before an answer
        tail = tokenizer(response + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    else:
        tail = full[len(head):]
    tail = tail[: max(1, max_length - 32)]
    head = head[-(max_length - len(tail)):] if len(head) + len(tail) > max_length else head
    return head + tail, len(head)


def score(model, tokenizer, prompts: Sequence[list[Message]], responses: Sequence[str], max_length: int = 512,
          batch_size: int = 16) -> Scored:
    """Summed log-probability of each response given its prompt under ``model`` (eval mode, no grad)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_pair(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")  # similar lengths per batch
    logp, tokens = np.zeros(len(encoded)), np.zeros(len(encoded), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            target = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, first = encoded[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                target[row, first: len(seq)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1))[..., 0]
            hit = target[:, 1:].to(device)
            logp[idx] = (logprobs * hit).sum(-1).cpu().numpy()
            tokens[idx] = hit.sum(-1).cpu().numpy()
    return Scored(logp, tokens)


def generate(model, tokenizer, prompts: Sequence[list[Message]], max_new_tokens: int = 128, max_length: int = 512,
             batch_size: int = 16) -> list[str]:
    """Greedy answers (text, special tokens removed) to each prompt; prompts longer than
    ``max_length - max_new_tokens`` tokens keep their last tokens."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    keep = max(16, max_length - max_new_tokens)
    encoded = [_ids(tokenizer, p, True)[-keep:] for p in prompts]
    out: list[str] = [""] * len(encoded)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)  # left padding for generation
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
    return out


def load(path: str, device: str):
    """Model and tokenizer from ``path`` on ``device`` (bfloat16 on a GPU that supports it, else float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device), tokenizer


def measure(models: dict[str, str], prompts: Sequence[list[Message]], chosen: Sequence[str],
            rejected: Sequence[str] | None, answer_prompts: int = 0, max_new_tokens: int = 128,
            max_length: int = 512, batch_size: int = 16) -> dict:
    """What evaluation needs from each model (name → path), model by model (one in memory at a time).

    Returns ``{name: {"chosen_logp", "chosen_tokens", "rejected_logp", "rejected_tokens" (lists, or
    None without ``rejected``), "answers" (greedy answers to the first ``answer_prompts`` prompts),
    "seconds": {"score", "generate"}}}`` — plain lists, so it can be saved as JSON."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict = {}
    for name, path in models.items():
        started = time.perf_counter()
        model, tokenizer = load(path, device)
        c = score(model, tokenizer, prompts, chosen, max_length, batch_size)
        r = score(model, tokenizer, prompts, rejected, max_length, batch_size) if rejected is not None else None
        scored_s = time.perf_counter() - started
        started = time.perf_counter()
        answers = (generate(model, tokenizer, prompts[:answer_prompts], max_new_tokens, max_length, batch_size)
                   if answer_prompts else [])
        out[name] = {"chosen_logp": c.logp.tolist(), "chosen_tokens": c.tokens.tolist(),
                     "rejected_logp": r.logp.tolist() if r else None, "rejected_tokens": r.tokens.tolist() if r else None,
                     "answers": answers, "device": device,
                     "seconds": {"score": round(scored_s, 2), "generate": round(time.perf_counter() - started, 2)}}
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return out
