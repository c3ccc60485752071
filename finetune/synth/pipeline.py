"""The synthetic-data pipeline: seeds → new prompts → candidate answers → reward filter → leakage guard.

1. **New prompts** (``n_prompts`` generator calls). Call ``i`` uses method ``METHODS[i % 6]``:

   * ``self-instruct`` -- ``k_demos`` seed prompts as numbered examples, "write one new request on the
     same topic" (Y. Wang et al., "Self-Instruct: Aligning Language Models with Self-Generated
     Instructions", ACL 2023, arXiv:2212.10560: in-context seed tasks → new instruction, then filtering);
   * ``evol-*`` -- one seed prompt rewritten by one of Evol-Instruct's operations: in-breadth (a new,
     rarer prompt in the same domain) and in-depth (add constraints, deepen, concretise, more reasoning
     steps) (C. Xu et al., "WizardLM: Empowering Large Language Models to Follow Complex Instructions",
     ICLR 2024, arXiv:2304.12244).

   Seeds are drawn with ``random.Random(seed)``; each call has its own sampling seed, so reruns with
   the same inputs are cache hits (:mod:`finetune.synth.cache`).
2. **Parse** (:func:`parse_prompt`): the first paragraph of the answer, without list markers, "Here is…:"
   lead-ins and quotes; 3+ words and at most ``max_prompt_chars``. Then **distinct**: a new prompt equal
   (normalised) or a MinHash near-duplicate (``dedup_threshold``) of a seed or of an earlier new prompt is
   dropped (Self-Instruct drops new instructions too similar to existing ones; it used ROUGE-L < 0.7, we
   use the dataset builds' MinHash test).
3. **Answers**: ``candidates`` sampled answers per new prompt, the prompt alone as a user turn.
4. **Reward filter**: every non-empty candidate is scored by the reward model
   (:class:`finetune.reward.RewardModel`); per prompt the best one is kept when its reward is at or above
   the floor = max(``min_reward``, the ``min_reward_seed_quantile`` quantile of the rewards of the seeds'
   own real answers) -- "at least as good as a typical real answer on this topic" (best-of-n, rejection
   sampling). Without either setting there is no floor.
5. **Leakage guard** (:mod:`finetune.synth.leakage`): rows whose prompt or answer copies a held-out row
   of the reference versions are dropped.

Every row: ``messages`` (user prompt, assistant answer; TRL's SFT column), ``synthetic=True``,
``seed_message_ids`` / ``seed_conversation_ids`` (the real seeds the prompt came from), ``topic_id``,
``generator`` (``kind:model``), ``method``, ``reward``, ``reward_floor``, token counts of the prompt and
answer calls, and the sft lineage columns (``source="synthetic"``, ``origin`` = method).

Why not distilabel (1.5.3, the latest, in the package index): it does not fit here -- its ``TransformersLLM``
goes through a hub-oriented ``pipeline(...)`` and outlines extras, its OpenAI LLM needs the ``openai``
client, it has no Bedrock Converse LLM, its steps run in ``multiprocess`` worker processes (heavy on 2
cores), and its cache is per pipeline step and batch (keyed by the pipeline's signature), not per call
with token and cost accounting; missing dependencies (``universal_pathlib``, ``portalocker``, ``openai``)
would have to be added for little reuse. The pipeline is small enough to own: ~200 lines.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from finetune import dedup
from finetune.synth.cache import CachedGenerator
from finetune.synth.costs import Usage
from finetune.synth.errors import SynthError
from finetune.synth.generators import GenParams
from finetune.synth.leakage import LeakageGuard, LeakageReport, filter_rows
from finetune.synth.seeds import Seed, SeedSet

METHODS = ("self-instruct", "evol-breadth", "evol-constraints", "evol-deepen", "evol-concretize", "evol-reasoning")

_EVOL = {
    "evol-breadth": "Write a brand-new request in the same domain as the request below, about a rarer and more "
                    "specific subject. Reply with the new request only.",
    "evol-constraints": "Rewrite the request below so that it adds one more constraint or requirement. Keep it on "
                        "the same topic and answerable. Reply with the rewritten request only.",
    "evol-deepen": "Rewrite the request below so that it asks about the subject in more depth. Keep it answerable. "
                   "Reply with the rewritten request only.",
    "evol-concretize": "Rewrite the request below, replacing general ideas with more specific ones. Reply with the "
                       "rewritten request only.",
    "evol-reasoning": "Rewrite the request below so that answering it needs several steps of reasoning. Reply with "
                      "the rewritten request only.",
}
_DEMO_CHARS = 400


@dataclass(frozen=True)
class SynthConfig:
    """One run's recipe. ``n_prompts`` prompt-generation calls; ``candidates`` answers per new prompt;
    ``k_demos`` seed examples per self-instruct call; ``prompt_params`` / ``response_params`` sampling;
    ``seed`` for seed draws and call seeds; ``min_reward`` / ``min_reward_seed_quantile`` the reward
    floor (step 4); ``dedup_threshold`` for step 2; ``min_prompt_words`` / ``max_prompt_chars`` bounds."""

    n_prompts: int = 8
    candidates: int = 2
    k_demos: int = 3
    prompt_params: GenParams = GenParams(temperature=0.9, top_p=0.95, max_new_tokens=64)
    response_params: GenParams = GenParams(temperature=0.7, top_p=0.9, max_new_tokens=128)
    seed: int = 0
    min_reward: float | None = None
    min_reward_seed_quantile: float | None = 0.25
    dedup_threshold: float = 0.85
    min_prompt_words: int = 3
    max_prompt_chars: int = 2000

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["prompt_params"], out["response_params"] = self.prompt_params.as_dict(), self.response_params.as_dict()
        return out


@dataclass
class SynthResult:
    """Rows (train split), ``steps`` [(name, count)], ``dropped`` {step: count}, the reward floor and
    kept rewards' summary, the leakage report, generator usage per stage (``prompts``, ``answers``)."""

    rows: list[dict]
    steps: list[tuple[str, int]]
    dropped: dict[str, int]
    reward: dict
    leakage: LeakageReport
    usage: dict[str, Usage] = field(default_factory=dict)


def _call_seed(seed: int, stage: str, i: int, j: int = 0) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stage}:{i}:{j}".encode()).digest()[:4], "big") >> 1


def instruction(method: str, demos: list[Seed]) -> list[dict]:
    """The chat asking the generator for one new prompt with ``method`` from seed prompts ``demos``."""
    if method == "self-instruct":
        listed = "\n".join(f"{n}. {' '.join(s.text.split())[:_DEMO_CHARS]}" for n, s in enumerate(demos, 1))
        text = (f"Here are requests that users sent to an AI assistant:\n\n{listed}\n\nWrite one new request on the "
                "same topic that is different from all of these. Reply with the new request only.")
    else:
        text = f"{_EVOL[method]}\n\nRequest: {' '.join(demos[0].text.split())[:_DEMO_CHARS]}"
    return [{"role": "user", "content": text}]


_LEAD = re.compile(r"^(?:sure[,!.]?\s*)?(?:here(?:'s| is)\b[^:\n]{0,60}:\s*)?", re.I)
_LABEL = re.compile(r"^(?:\d+[.)]\s*|[-*•]\s*)?(?:(?:new|rewritten|evolved)\s+)?(?:request|prompt|instruction|question)"
                    r"\s*(?:\d+\s*)?:\s*", re.I)


def parse_prompt(text: str, min_words: int = 3, max_chars: int = 2000) -> str | None:
    """The new prompt in a generator's answer (see the module doc, step 2), or None."""
    para: list[str] = []
    for line in (text or "").strip().splitlines():
        line = line.strip()
        if not line:
            if para:
                break
            continue
        para.append(line)
    s = " ".join(para)
    s = _LEAD.sub("", s, count=1)
    s = _LABEL.sub("", s, count=1)
    s = re.sub(r"^(?:\d+[.)]|[-*•])\s*", "", s).strip().strip("\"'“”‘’`").strip()
    if len(s.split()) < min_words or len(s) > max_chars:
        return None
    return s


def reward_floor(reward_model, seeds: list[Seed], config: SynthConfig) -> tuple[float | None, int]:
    """(floor, number of real seed answers scored) -- see the module doc, step 4."""
    floors, scored = [], 0
    if config.min_reward is not None:
        floors.append(float(config.min_reward))
    real = [s for s in seeds if s.response and s.response.strip()]
    if config.min_reward_seed_quantile is not None and real:
        r = reward_model.score([s.prompt for s in real], [s.response for s in real])
        scored = len(real)
        floors.append(float(np.quantile(r, config.min_reward_seed_quantile)))
    return (max(floors) if floors else None), scored


def run(seeds: SeedSet, generator: CachedGenerator, reward_model, guard: LeakageGuard, config: SynthConfig,
        planted: Callable[[list[dict]], list[dict]] | None = None) -> SynthResult:
    """Steps 1-5 (module doc). ``planted`` -- a test hook: called with the rows that passed the reward
    filter, its returned list goes through the leakage guard instead (to plant a leaking row and see it
    dropped). Raises SynthError when there are no seeds, and what the generator raises."""
    pool = seeds.seeds
    if not pool:
        raise SynthError("no seed prompts")
    rng = random.Random(config.seed)
    order = pool[:]
    rng.shuffle(order)
    plans = []
    for i in range(config.n_prompts):
        method = METHODS[i % len(METHODS)]
        demos = rng.sample(pool, min(config.k_demos, len(pool))) if method == "self-instruct" else [order[i % len(order)]]
        plans.append((method, demos))
    steps: list[tuple[str, int]] = [("prompt generation calls", config.n_prompts)]
    dropped: dict[str, int] = {}

    # 1-2. new prompts
    gen_usage = Usage()
    generator.usage = gen_usage
    asks = [instruction(m, d) for m, d in plans]
    raw = generator.complete_many(asks, config.prompt_params, [_call_seed(config.seed, "prompt", i)
                                                                for i in range(len(asks))])
    parsed = [(i, parse_prompt(c.text, config.min_prompt_words, config.max_prompt_chars)) for i, c in enumerate(raw)]
    parsed = [(i, p) for i, p in parsed if p]
    dropped["unparseable"] = config.n_prompts - len(parsed)
    steps.append(("prompts parsed", len(parsed)))
    texts = [s.text for s in pool] + [p for _, p in parsed]
    keep = dedup.deduplicate(texts, dedup.DedupConfig(threshold=config.dedup_threshold)).keep[len(pool):]
    seed_keys = {dedup.normalise(s.text) for s in pool}
    new = [(i, p) for (i, p), k in zip(parsed, keep) if k and dedup.normalise(p) not in seed_keys]
    dropped["duplicate of a seed or another new prompt"] = len(parsed) - len(new)
    steps.append(("prompts distinct", len(new)))

    # 3. answers
    ans_usage = Usage()
    generator.usage = ans_usage
    chats = [[{"role": "user", "content": p}] for _, p in new for _ in range(config.candidates)]
    cand_seeds = [_call_seed(config.seed, "answer", i, j) for i, _ in new for j in range(config.candidates)]
    answers = generator.complete_many(chats, config.response_params, cand_seeds)
    steps.append(("candidate answers generated", len(answers)))
    scored_idx = [n for n, a in enumerate(answers) if a.text.strip()]
    dropped["empty answers"] = len(answers) - len(scored_idx)
    steps.append(("candidate answers scored", len(scored_idx)))

    # 4. reward filter
    floor, real_scored = reward_floor(reward_model, pool, config)
    rewards = np.full(len(answers), -np.inf)
    if scored_idx:
        rewards[scored_idx] = reward_model.score([chats[n] for n in scored_idx], [answers[n].text for n in scored_idx])
    rows = []
    for q, (i, prompt) in enumerate(new):
        block = rewards[q * config.candidates:(q + 1) * config.candidates]
        best = int(np.argmax(block)) if len(block) else 0
        value = float(block[best]) if len(block) else -np.inf
        if not np.isfinite(value) or (floor is not None and value < floor):
            continue
        n = q * config.candidates + best
        method, demos = plans[i]
        a = answers[n]
        ident = hashlib.sha256(f"{prompt}\x1f{a.text}".encode()).hexdigest()[:24]
        rows.append({
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": a.text}],
            "conversation_id": f"synth-{ident}", "source": "synthetic", "app": None, "model": generator.generator.model,
            "prompt_version": None, "origin": method, "message_id": f"synth-{ident}", "corrected": False,
            "synthetic": True, "seed_message_ids": [d.message_id for d in demos],
            "seed_conversation_ids": [d.conversation_id for d in demos],
            "topic_id": next((d.topic_id for d in demos if d.topic_id), None), "generator": generator.id,
            "method": method, "reward": value, "reward_floor": floor, "candidate_index": best,
            "prompt_call_tokens_in": raw[i].prompt_tokens, "prompt_call_tokens_out": raw[i].completion_tokens,
            "answer_tokens_in": a.prompt_tokens, "answer_tokens_out": a.completion_tokens})
    dropped["no candidate at or above the reward floor"] = len(new) - len(rows)
    steps.append(("kept by the reward filter (best of n)", len(rows)))

    # 5. leakage guard
    checked = planted(rows) if planted else rows
    kept, report = filter_rows(checked, guard)
    dropped["leakage (near-duplicate of a validation/test row)"] = report.dropped
    if planted:
        steps.append(("rows checked for leakage (incl. planted)", len(checked)))
    steps.append(("rows after the leakage guard", len(kept)))
    kept_r = [r["reward"] for r in kept]
    summary = {"floor": floor, "seed_quantile": config.min_reward_seed_quantile, "min_reward": config.min_reward,
               "real_answers_scored": real_scored,
               "kept": {"min": min(kept_r), "mean": float(np.mean(kept_r)), "max": max(kept_r)} if kept_r else None}
    return SynthResult(kept, steps, dropped, summary, report, {"prompts": gen_usage, "answers": ans_usage})
