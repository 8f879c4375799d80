"""The rollout engine interface: what the trainer and evaluation call, whatever engine samples.

Imports neither torch nor transformers, so records that hold completions (`azr.rollouts`) stay light.

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

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


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

    def sleep(self) -> None:  # noqa: B027 (a no-op by default, not abstract: most engines hold nothing)
        """Free the engine's accelerator memory until the next generate call; a no-op by default."""


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
