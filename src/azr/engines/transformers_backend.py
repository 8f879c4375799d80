"""Generation with a transformers causal LM in the trainer's process, token by token with a KV cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from azr.engines.base import Completion, GenerationBackend, SamplingParams, per_prompt_params
from azr.policy import Policy, eos_token_ids, pad_token_id, position_ids_from_mask


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
