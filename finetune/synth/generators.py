"""Generator models, pluggable: the local SmolLM2, any OpenAI-compatible endpoint, Amazon Bedrock.

Every generator has a ``kind`` (``local`` / ``openai`` / ``bedrock``), a ``model`` and
``complete_batch(messages_list, params, seeds) -> list[Completion]`` (one chat per item, each with its
own sampling seed); ``complete(messages, params, seed)`` is the one-item form. Messages are
``[{"role": "system"|"user"|"assistant", "content": str}, …]``. Errors: :class:`SynthError` for a
failure, :class:`~finetune.synth.retry.Throttled` (retried by the caller, :mod:`finetune.synth.cache`)
for throttling.

* :class:`LocalGenerator` -- SmolLM2-135M-Instruct (``finetune.basemodel.resolve``) with transformers,
  nucleus sampling (``temperature``, ``top_p``; ``top_k`` off), left-padded batches. A batch is seeded
  with ``torch.manual_seed`` from the SHA-256 of its rows' seeds, so the same batch gives the same texts
  on the same machine and library versions; a row's text depends on the rows batched with it.
  Token counts are exact (the rendered chat template's tokens in, new tokens up to and including the
  end-of-turn token out).
* :class:`OpenAICompatibleGenerator` -- ``POST {base_url}/v1/chat/completions`` with httpx (OpenAI's Chat
  Completions API, platform.openai.com/docs/api-reference/chat/create: ``model``, ``messages``,
  ``temperature``, ``top_p``, ``max_tokens``, ``seed``); tokens from the response's ``usage``. A
  ``base_url`` already ending in ``/v1`` is not doubled. 429 and 503 are throttling (``Retry-After``
  honoured); other non-2xx answers raise SynthError.
* :class:`BedrockGenerator` -- boto3 ``bedrock-runtime`` ``Converse`` (docs.aws.amazon.com/bedrock/latest/
  APIReference/API_runtime_Converse.html): system messages go to ``system``, others to ``messages`` with
  ``[{"text": …}]`` content, ``inferenceConfig`` ``maxTokens``/``temperature``/``topP``; tokens from
  ``usage.inputTokens``/``outputTokens``. botocore's own retries are switched off (``max_attempts=1``)
  so throttling is retried and counted here. Converse has no seed: the seed only keys the cache.

No generator logs prompt or answer text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from finetune.synth.errors import SynthError
from finetune.synth.retry import THROTTLING_AWS, THROTTLING_HTTP, Throttled

Message = dict[str, str]


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters: ``temperature`` (> 0 samples; 0 is greedy), ``top_p`` nucleus mass in (0, 1],
    ``max_new_tokens`` the cap on generated tokens."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Completion:
    """One answer: ``text`` (special tokens removed, stripped), ``prompt_tokens`` and ``completion_tokens``
    (the generator's count: exact for local, the endpoint's ``usage`` otherwise)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class Generator(Protocol):
    """What the pipeline needs from a generator model (see the module doc)."""

    kind: str
    model: str
    batch_size: int

    def complete(self, messages: list[Message], params: GenParams, seed: int = 0) -> Completion: ...

    def complete_batch(self, messages: Sequence[list[Message]], params: GenParams,
                       seeds: Sequence[int]) -> list[Completion]: ...


class _OneByOne:
    """``complete_batch`` as a loop over ``complete`` (remote generators: one request per chat)."""

    batch_size = 1

    def complete_batch(self, messages: Sequence[list[Message]], params: GenParams,
                       seeds: Sequence[int]) -> list[Completion]:
        return [self.complete(m, params, s) for m, s in zip(messages, seeds)]


class LocalGenerator:
    """SmolLM2 (or any local causal LM folder with a chat template) via transformers; see the module doc.

    ``model``: a :func:`finetune.basemodel.resolve` name (default ``smollm2-135m-instruct``) or folder;
    ``max_length``: prompt tokens kept (their last ones) plus ``max_new_tokens``. Loading takes ~1 s once
    the SmolLM2 folder exists (~20 s the first time). ``threads``: torch CPU threads while generating (None:
    torch's default); on a shared 2-core machine 1 thread ran 10x faster than 2 (19.6 vs 1.8 new tokens/s,
    load average 7), as idle-spinning OpenMP threads fight for cores. Raises SynthError when the model
    cannot be loaded."""

    kind = "local"

    def __init__(self, model: str = "smollm2-135m-instruct", batch_size: int = 8, device: str | None = None,
                 max_length: int = 1024, threads: int | None = None) -> None:
        import torch

        from finetune import basemodel, likelihood

        self.model = model
        self.batch_size = batch_size
        self.threads = threads
        self.max_length = max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._lm, self._tok = likelihood.load(basemodel.resolve(model), self.device)
        except (OSError, ValueError) as exc:
            raise SynthError(f"cannot load local generator {model!r}: {exc}") from exc
        self._lm.eval()

    def complete(self, messages: list[Message], params: GenParams, seed: int = 0) -> Completion:
        return self.complete_batch([messages], params, [seed])[0]

    def _encode(self, messages: list[Message], keep: int) -> list[int]:
        out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])[-keep:]

    def complete_batch(self, messages: Sequence[list[Message]], params: GenParams,
                       seeds: Sequence[int]) -> list[Completion]:
        """Answers to ``messages`` in batches of ``batch_size`` (each batch seeded, see the module doc)."""
        import torch

        if len(messages) != len(seeds):
            raise SynthError(f"{len(messages)} chats but {len(seeds)} seeds")
        tok = self._tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        stop = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int) and i >= 0}
        keep = max(16, self.max_length - params.max_new_tokens)
        out: list[Completion] = []
        for start in range(0, len(messages), self.batch_size):
            chunk = [self._encode(m, keep) for m in messages[start:start + self.batch_size]]
            chunk_seeds = seeds[start:start + self.batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, enc in enumerate(chunk):  # left padding
                ids[row, width - len(enc):] = torch.tensor(enc)
                mask[row, width - len(enc):] = 1
            digest = hashlib.sha256(",".join(str(int(s)) for s in chunk_seeds).encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "big") % 2**63)
            sample = params.temperature > 0
            kwargs = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0} \
                if sample else {"do_sample": False}
            before = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                with torch.no_grad():
                    gen = self._lm.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                            max_new_tokens=params.max_new_tokens, pad_token_id=pad, **kwargs)
            finally:
                torch.set_num_threads(before)
            for row, enc in enumerate(chunk):
                new = gen[row, width:].tolist()
                n = len(new)
                for j, t in enumerate(new):
                    if t in stop:
                        n = j + 1
                        break
                text = tok.decode(new[:n], skip_special_tokens=True).strip()
                out.append(Completion(text, len(enc), n))
        return out


class OpenAICompatibleGenerator(_OneByOne):
    """Chat Completions over HTTP (see the module doc). ``base_url`` e.g. ``http://127.0.0.1:8000`` or
    ``https://api.openai.com/v1``; ``api_key`` sent as a bearer token when given; ``timeout_s`` per request.
    Raises SynthError for a non-throttling HTTP error or an answer without ``choices``."""

    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        import httpx

        if not base_url:
            raise SynthError("the openai generator needs a base URL (FLYWHEEL_SYNTH_BASE_URL or --base-url)")
        self.model = model
        root = base_url.rstrip("/")
        self.url = root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def complete(self, messages: list[Message], params: GenParams, seed: int = 0) -> Completion:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_new_tokens, "seed": int(seed), "n": 1}
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TransportError as exc:
            raise SynthError(f"cannot reach {self.url}: {type(exc).__name__}") from exc
        if resp.status_code in THROTTLING_HTTP:
            after = resp.headers.get("retry-after")
            try:
                wait = float(after) if after is not None else None
            except ValueError:
                wait = None
            raise Throttled(f"HTTP {resp.status_code} from {self.url}", wait)
        if resp.status_code >= 400:
            raise SynthError(f"HTTP {resp.status_code} from {self.url}")
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SynthError(f"{self.url} answered without choices[0].message.content") from exc
        usage = data.get("usage") or {}
        return Completion(text.strip(), int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def close(self) -> None:
        self._client.close()


class BedrockGenerator(_OneByOne):
    """Amazon Bedrock ``Converse`` (see the module doc). ``model`` is the Bedrock ``modelId``; ``region``,
    ``endpoint_url`` (None: AWS's) and the usual boto3 credential chain. Raises SynthError for a
    non-throttling AWS error."""

    kind = "bedrock"

    def __init__(self, model: str, region: str = "us-east-1", endpoint_url: str | None = None,
                 timeout_s: float = 120.0, client=None) -> None:
        self.model = model
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url,
                                  config=Config(read_timeout=timeout_s, retries={"max_attempts": 1, "mode": "standard"}))
        self._client = client

    def complete(self, messages: list[Message], params: GenParams, seed: int = 0) -> Completion:
        from botocore.exceptions import BotoCoreError, ClientError

        system = [{"text": m["content"]} for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages if m["role"] != "system"]
        kwargs = {"modelId": self.model, "messages": turns,
                  "inferenceConfig": {"maxTokens": params.max_new_tokens, "temperature": params.temperature,
                                      "topP": params.top_p}}
        if system:
            kwargs["system"] = system
        try:
            resp = self._client.converse(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in THROTTLING_AWS:
                raise Throttled(f"Bedrock {code}") from exc
            raise SynthError(f"Bedrock Converse failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise SynthError(f"Bedrock Converse failed: {type(exc).__name__}") from exc
        content = resp.get("output", {}).get("message", {}).get("content", [])
        text = "".join(part.get("text", "") for part in content)
        usage = resp.get("usage", {})
        return Completion(text.strip(), int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0)))


def make(settings, batch_size: int | None = None) -> Generator:
    """The generator :class:`~finetune.synth.config.SynthSettings` describes. Raises SynthError."""
    if settings.generator == "local":
        return LocalGenerator(settings.model, batch_size or settings.batch_size, threads=settings.threads)
    if settings.generator == "openai":
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return OpenAICompatibleGenerator(settings.model, settings.base_url or "", key, settings.timeout_s)
    if settings.generator == "bedrock":
        return BedrockGenerator(settings.model, settings.region, settings.endpoint_url, settings.timeout_s)
    raise SynthError(f"unknown generator {settings.generator!r}; one of local, openai, bedrock")

