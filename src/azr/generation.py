"""Rollout generation: the backend interface the trainer and evaluation call, its transformers
implementation, and the factory that also builds the vLLM one (`azr.vllm_backend`).

Conventions every backend follows:

- `Completion.response_ids` are the sampled tokens, including a final EOS token and, when a stop string
  ended the generation, the tokens up to and including the one that completed it. The model is thus
  trained on ending its answer; `text` never contains the stop string or EOS, and
  `tokenizer.decode(response_ids, skip_special_tokens=True)` always starts with `text`.
- `Completion.logprobs[j]` is the log-probability of `response_ids[j]` under the model's unmodified
  next-token distribution, `log_softmax(logits)`: temperature 1, no top-p truncation, whatever the
  sampling parameters were. This is exactly what `azr.policy.sequence_logprobs(..., temperature=1.0)`
  recomputes on `pack_sequences([prompt_ids], [response_ids])`.
- `finish_reason` is "eos" (an EOS token was sampled), "stop" (a stop string appeared) or "length"
  (`max_new_tokens` tokens were sampled), checked in that order after each token.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from azr.config import GenerationConfig
from azr.policy import Policy, eos_token_ids, pad_token_id, position_ids_from_mask
from azr.sharding import is_sharded, whole


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion. `temperature == 0` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass
class Completion:
    """One generated response (see the module docstring for the exact conventions)."""

    prompt: str
    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "eos"


class GenerationBackend(ABC):
    """Turns prompts into completions with the current policy weights."""

    tokenizer: PreTrainedTokenizerBase

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        seed: int | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in prompt order. `params` is shared or given per prompt."""

    @abstractmethod
    def update_weights(self, model: torch.nn.Module) -> None:
        """Make later generations use `model`'s current weights."""


def per_prompt_params(
    prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
) -> list[SamplingParams]:
    """One `SamplingParams` per prompt: the shared one repeated, or the given list checked for length."""
    per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(per_prompt) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(per_prompt)} sampling parameters")
    return per_prompt


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user_message: str, *, system: str | None = None) -> str:
    """Wrap a user message in the tokenizer's chat template, ending where the assistant's reply starts."""
    if tokenizer.chat_template is None:
        raise ValueError(
            "This tokenizer has no chat template; use a plain (completion-style) prompt instead."
        )
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user_message})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@dataclass
class _Row:
    """Generation state of one prompt inside a micro-batch."""

    index: int  # position in the caller's prompt list
    prompt_ids: list[int]
    params: SamplingParams
    response_ids: list[int]
    logprobs: list[float]
    text: str = ""
    finish_reason: str = ""  # set when the row finishes


class TransformersBackend(GenerationBackend):
    """Generation with a transformers causal LM in this process (shares the trainer's model).

    Prompts are sorted by length and cut into micro-batches of at most `max_batch_size`, left-padded, and
    decoded token by token with a KV cache. Each row has its own temperature, top-p, token budget and stop
    strings; finished rows are dropped from the batch (and its cache) so they cost nothing afterwards.
    Results are reproducible for a given `seed`, prompt list, parameters and `max_batch_size`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 16,
        device: str | torch.device | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.compute_dtype = compute_dtype
        self.pad_token_id = pad_token_id(tokenizer)
        self.eos_ids = eos_token_ids(model, tokenizer)

    @classmethod
    def from_policy(cls, policy: Policy, *, max_batch_size: int = 16) -> TransformersBackend:
        """A backend on the policy's model, device and compute dtype."""
        return cls(
            policy.model,
            policy.tokenizer,
            max_batch_size=max_batch_size,
            device=policy.device,
            compute_dtype=policy.compute_dtype,
        )

    def update_weights(self, model: torch.nn.Module) -> None:
        """The backend runs the model object itself, so only a different object needs recording."""
        self.model = model

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        seed: int | None = None,
    ) -> list[Completion]:
        per_prompt = per_prompt_params(prompts, params)
        rows = [
            _Row(index=i, prompt_ids=self._encode(prompt, p), params=p, response_ids=[], logprobs=[])
            for i, (prompt, p) in enumerate(zip(prompts, per_prompt, strict=True))
        ]
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, (1,)).item()))

        # Longest prompts first so each micro-batch holds prompts of similar length (little padding).
        ordered = sorted(rows, key=lambda row: (-len(row.prompt_ids), row.index))
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(ordered), self.max_batch_size):
                self._generate_batch(ordered[start : start + self.max_batch_size], generator)
        finally:
            self.model.train(was_training)
        return [
            Completion(
                prompt=prompts[row.index],
                text=row.text,
                prompt_ids=row.prompt_ids,
                response_ids=row.response_ids,
                logprobs=row.logprobs,
                finish_reason=row.finish_reason,
            )
            for row in rows
        ]

    def _encode(self, prompt: str, params: SamplingParams) -> list[int]:
        ids = self.tokenizer(prompt).input_ids
        if not ids:
            raise ValueError("cannot generate from an empty prompt")
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if limit is not None and len(ids) + params.max_new_tokens > limit:
            raise ValueError(
                f"prompt of {len(ids)} tokens + max_new_tokens {params.max_new_tokens} exceeds the model's "
                f"context of {limit} tokens"
            )
        return ids

    @torch.inference_mode()
    def _generate_batch(self, rows: list[_Row], generator: torch.Generator) -> None:
        prompt_len = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.tensor(
            [[self.pad_token_id] * (prompt_len - len(r.prompt_ids)) + r.prompt_ids for r in rows],
            device=self.device,
        )
        attention_mask = torch.tensor(
            [[0] * (prompt_len - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows],
            device=self.device,
        )
        position_ids = position_ids_from_mask(attention_mask)
        temperature = torch.tensor([r.params.temperature for r in rows], device=self.device)
        top_p = torch.tensor([r.params.top_p for r in rows], device=self.device)

        active = list(rows)
        cache = None
        while True:
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == torch.bfloat16
            ):
                output = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,  # the prompt pass would otherwise build [B, P, vocab] logits
                )
            cache = output.past_key_values
            tokens, logprobs = _sample(output.logits[:, -1].float(), temperature, top_p, generator)
            keep = [
                i
                for i, row in enumerate(active)
                if not self._advance(row, int(tokens[i]), float(logprobs[i]))
            ]
            if not keep:
                return
            if len(keep) < len(active):
                kept = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(kept)
                attention_mask, position_ids = attention_mask[kept], position_ids[kept]
                tokens, temperature, top_p = tokens[kept], temperature[kept], top_p[kept]
                active = [active[i] for i in keep]
            input_ids = tokens.unsqueeze(-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
            position_ids = position_ids[:, -1:] + 1

    def _advance(self, row: _Row, token: int, logprob: float) -> bool:
        """Append a sampled token to `row` and return whether the row is finished."""
        row.response_ids.append(token)
        row.logprobs.append(logprob)
        if row.params.stop or token in self.eos_ids or len(row.response_ids) >= row.params.max_new_tokens:
            row.text = self.tokenizer.decode(row.response_ids, skip_special_tokens=True)
        if token in self.eos_ids:
            row.finish_reason = "eos"
        elif (cut := _first_stop(row.text, row.params.stop)) is not None:
            row.text = row.text[:cut]
            row.finish_reason = "stop"
        elif len(row.response_ids) >= row.params.max_new_tokens:
            row.finish_reason = "length"
        return bool(row.finish_reason)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index of the earliest occurrence of any stop string in `text`, or None."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


def _sample(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row (greedy where temperature is 0) and return it with its temperature-1
    log-probability."""
    log_probs = F.log_softmax(logits, dim=-1)
    tokens = logits.argmax(dim=-1)
    sampling = temperature > 0
    if sampling.any():
        # Greedy rows get a dummy temperature here; their sample is discarded below.
        scaled = logits / torch.where(sampling, temperature, 1.0).unsqueeze(-1)
        probs = _top_p_filter(F.softmax(scaled, dim=-1), top_p)
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tokens = torch.where(sampling, sampled, tokens)
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _top_p_filter(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero every token outside the smallest set whose probability mass reaches top_p (per row)."""
    truncating = top_p < 1
    if not truncating.any():
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = (mass_before >= top_p.unsqueeze(-1)) & truncating.unsqueeze(-1)
    return probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))


class SnapshotBackend(TransformersBackend):
    """Generation from the backend's own copy of the policy's weights, kept in a faster form for CPU
    decoding: `bfloat16` weights (half the memory traffic; fast on CPUs with AVX512-BF16 or AMX) or `int8`
    (linear layers quantised dynamically with torch's fbgemm kernels, a quarter of the traffic).

    This is the shape of any engine with its own weights (vLLM on a GPU, a CPU inference engine):
    `update_weights` must be called after every optimizer step, and copies the trainer's current weights
    in (LoRA adapters merged), so no rollout ever comes from stale weights. Its log-probs are those of the
    copy's numerics, not the trainer's: either recompute them with the trainer's model
    (`optim.recompute_logprobs: true`; measured with an int8 copy of Qwen2.5-Coder-0.5B, 27% of tokens
    were outside the PPO clip range otherwise) or keep them, and the update's PPO ratio is then a clipped
    importance weight between the two (`update/clip_fraction` shows how often it clips).
    """

    def __init__(
        self, policy: Policy, *, weights: Literal["bfloat16", "int8"], max_batch_size: int = 16
    ) -> None:
        if weights not in ("bfloat16", "int8"):
            raise ValueError(f"weights must be 'bfloat16' or 'int8', got {weights!r}")
        if weights == "int8" and policy.device.type != "cpu":
            raise ValueError("int8 rollout weights use CPU kernels: run on device 'cpu' or use 'bfloat16'")
        self.weights = weights
        super().__init__(
            self._snapshot(policy.model),
            policy.tokenizer,
            max_batch_size=max_batch_size,
            device=policy.device,
            compute_dtype=torch.bfloat16 if weights == "bfloat16" else torch.float32,
        )

    def update_weights(self, model: torch.nn.Module) -> None:
        """Replace the copy with the trainer's current weights."""
        if self.weights == "bfloat16":
            _copy_weights(model, self.model)
        else:
            self.model = self._snapshot(model)

    def _snapshot(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.weights == "bfloat16":
            return _plain_copy(model, torch.bfloat16).eval()
        plain = _plain_copy(model, torch.float32)
        with warnings.catch_warnings():
            # torch.ao's dynamic quantisation is deprecated in favour of torchao; it works in the pinned torch
            # (README, "Dependencies") and would otherwise warn at every weight sync.
            warnings.simplefilter("ignore", UserWarning)
            return torch.ao.quantization.quantize_dynamic(plain.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def _plain_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A detached `dtype` copy of a transformers model, with any LoRA adapter merged into its weights and
    any FSDP sharding gathered."""
    if is_sharded(model):
        # FSDP refuses to deep-copy a sharded model (and no rank has its whole weights to copy): build an
        # unsharded one, directly in `dtype` on the model's device, and gather the weights into it.
        with torch.device(next(model.parameters()).device):
            copied = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
        copied.generation_config = copy.deepcopy(model.generation_config)
        _copy_weights(model, copied)
    else:
        copied = copy.deepcopy(model)
        if hasattr(copied, "merge_and_unload"):  # peft
            copied = copied.merge_and_unload()
        copied = copied.to(dtype)
    copied.requires_grad_(False)
    return copied


def _copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy `source`'s full weights (`merged_weights`) into `target`'s tensors in place, cast to their
    dtype, one tensor at a time, so no second whole copy of the weights is ever held."""
    tensors = target.state_dict()
    written = set()
    with torch.no_grad():
        for name, tensor in merged_weights(source):
            tensors[name].copy_(tensor)
            written.add(name)
    if written != tensors.keys():
        raise ValueError(f"no weights given for {sorted(tensors.keys() - written)}")


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's full weights under Hugging Face names, one tensor at a time. For a peft LoRA model
    each adapted weight is computed out of place as base + delta: merging into the trainer's weights and
    unmerging again would leave round-off in the frozen base weights at every step. A sharded (FSDP)
    model's weights are gathered one tensor at a time, so every rank must iterate them together."""
    if not hasattr(model, "get_base_model"):
        for name, tensor in model.state_dict().items():
            yield name, whole(tensor)
        return
    base = model.get_base_model()
    adapted = {
        f"{name}.base_layer.weight": module
        for name, module in base.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        module = adapted.get(name)
        if module is not None:
            tensor = tensor + sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
        yield name.replace(".base_layer", ""), tensor


BACKENDS = ("transformers", "transformers-bf16", "transformers-int8", "vllm")


def make_backend(generation: GenerationConfig, policy: Policy, *, seed: int = 0) -> GenerationBackend:
    """The rollout backend named by `generation.backend`, on the policy's current weights.

    `transformers` samples with the trainer's own model object; `transformers-bf16` and `transformers-int8`
    keep their own copy in a faster form (`SnapshotBackend`); `vllm` runs a colocated vLLM engine. The
    trainer calls `update_weights` after every optimizer step; an engine that keeps its own copy of the
    weights reloads them there, so it never generates from stale ones.
    """
    if generation.backend == "transformers":
        return TransformersBackend.from_policy(policy, max_batch_size=generation.max_batch_size)
    if generation.backend in ("transformers-bf16", "transformers-int8"):
        weights = "bfloat16" if generation.backend == "transformers-bf16" else "int8"
        return SnapshotBackend(policy, weights=weights, max_batch_size=generation.max_batch_size)
    if generation.backend == "vllm":
        from azr.vllm_backend import VllmBackend

        return VllmBackend.launch(
            policy,
            gpu_memory_utilization=generation.vllm_gpu_memory_utilization,
            sleep_level=generation.vllm_sleep_level,
            seed=seed,
        )
    raise ValueError(f"unknown generation backend {generation.backend!r}; known: {', '.join(BACKENDS)}")
