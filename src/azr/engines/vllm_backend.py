"""Rollouts with vLLM, colocated: the engine lives in the trainer's process, on the trainer's GPU.

Written against vLLM 0.33 (`pip install 'azr[gpu]'`) and its documented offline API: `LLM(...)`,
`LLM.generate(prompts, sampling_params)`, `LLM.sleep(level)` / `LLM.wake_up(tags)` (sleep mode) and
`LLM.apply_model(func)`, which runs `func` on the engine's model, whose `load_weights` takes
(name, tensor) pairs in Hugging Face naming. It has NOT been run on a GPU: the tests drive it with a fake
engine that mimics exactly that surface.

How it meets the `azr.engines.base` contract:

- prompts go in as token ids (`{"prompt_token_ids": ...}`), tokenized by the trainer's tokenizer, so
  `prompt_ids` are exactly what the update scores;
- `response_ids` are vLLM's `token_ids`, which keep the EOS token and, after a stop string, the tokens up
  to the one that completed it, while `text` is cut before the stop string;
- `finish_reason`: vLLM says "stop" for EOS and for stop strings alike; its `stop_reason` is None (or a
  stop token id) for EOS and the matched string for a stop string, so they map to "eos" and "stop";
- `logprobs` are vLLM's log-probs of the sampled tokens (`logprobs=0`), which vLLM computes from the raw
  logits (temperature 1, before top-p) by default, but in its own kernels and precision. The trainer
  therefore recomputes them with its own model before the update (`optim.recompute_logprobs`, required
  with this backend), which makes the one on-policy PPO ratio exactly 1 as in the paper.

Weights: after every optimizer step `update_weights` pushes the full weights into the engine. A LoRA
policy is pushed merged (each adapted weight computed as base + delta, one tensor at a time), so vLLM
never needs LoRA support. Sleep level 1 keeps vLLM's copy in CPU memory between rollouts; level 2 drops
it, and the trainer's weights are pushed again on waking.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from azr.engines.base import Completion, GenerationBackend, SamplingParams, per_prompt_params
from azr.engines.weights import merged_weights
from azr.policy import Policy

VLLM_PIN = "vllm==0.33.0"


def _engine_model_loader(weights: Iterator[tuple[str, torch.Tensor]]) -> Callable[[Any], None]:
    def load(model: Any) -> None:
        model.load_weights(weights)

    return load


class VllmBackend(GenerationBackend):
    """Generation with a vLLM engine; `engine` is a `vllm.LLM` and `make_sampling_params` is
    `vllm.SamplingParams` (both injectable, so the contract is testable without vLLM)."""

    def __init__(
        self,
        engine: Any,
        make_sampling_params: Callable[..., Any],
        model: torch.nn.Module,
        tokenizer,
        *,
        sleep_level: int = 0,
    ) -> None:
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"sleep_level must be 0, 1 or 2, got {sleep_level}")
        self.engine = engine
        self.make_sampling_params = make_sampling_params
        self.model = model
        self.tokenizer = tokenizer
        self.sleep_level = sleep_level
        self._asleep: set[str] = set()

    @classmethod
    def launch(
        cls, policy: Policy, *, gpu_memory_utilization: float, sleep_level: int, seed: int
    ) -> VllmBackend:
        """A colocated engine on the policy's weights, sharing the GPU with the trainer."""
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                f"generation.backend: vllm needs vLLM, which is not installed: pip install 'azr[gpu]' "
                f"({VLLM_PIN}, CUDA only); or set generation.backend: transformers"
            ) from error
        if policy.device.type != "cuda":
            raise ValueError("generation.backend: vllm needs a CUDA device (set device: cuda)")
        # The engine must run in this process (not a child), so its weights can be loaded from ours
        # without a copy through another process; vLLM's torchrun launcher mode does that, and also
        # gives each data-parallel rank its own engine on its own GPU.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        for name, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(name, default)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
        engine = vllm.LLM(
            model=base.name_or_path,
            tokenizer=base.name_or_path,
            dtype="bfloat16" if policy.compute_dtype == torch.bfloat16 else "float32",
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=sleep_level > 0,
            distributed_executor_backend="external_launcher",
            seed=seed,
        )
        backend = cls(engine, vllm.SamplingParams, policy.model, policy.tokenizer, sleep_level=sleep_level)
        # The trainer's weights may differ from the files (a resumed checkpoint, merged LoRA).
        backend.update_weights(policy.model)
        return backend

    def update_weights(self, model: torch.nn.Module) -> None:
        self.model = model
        self._wake("weights")
        self._push_weights()

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        seed: int | None = None,
    ) -> list[Completion]:
        per_prompt = per_prompt_params(prompts, params)
        if not prompts:
            return []
        prompt_ids = [self.tokenizer(prompt).input_ids for prompt in prompts]
        if "weights" in self._asleep:
            self._wake("weights")
            if self.sleep_level == 2:  # the engine forgot its weights
                self._push_weights()
        self._wake("kv_cache")
        outputs = self.engine.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids],
            [self._sampling_params(p, None if seed is None else seed + i) for i, p in enumerate(per_prompt)],
            use_tqdm=False,
        )
        if self.sleep_level:
            self.engine.sleep(level=self.sleep_level)
            self._asleep = {"weights", "kv_cache"}
        return [
            self._completion(prompt, ids, output.outputs[0])
            for prompt, ids, output in zip(prompts, prompt_ids, outputs, strict=True)
        ]

    def _sampling_params(self, params: SamplingParams, seed: int | None) -> Any:
        return self.make_sampling_params(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop),
            include_stop_str_in_output=False,
            skip_special_tokens=True,
            logprobs=0,  # only the sampled token's
            seed=seed,
        )

    def _completion(self, prompt: str, prompt_ids: list[int], output: Any) -> Completion:
        response_ids = list(output.token_ids)
        logprobs = [
            float(position[token].logprob)
            for position, token in zip(output.logprobs, response_ids, strict=True)
        ]
        if output.finish_reason == "length":
            finish_reason = "length"
        elif isinstance(output.stop_reason, str):
            finish_reason = "stop"
        else:
            finish_reason = "eos"
        return Completion(prompt, output.text, prompt_ids, response_ids, logprobs, finish_reason)

    def _wake(self, tag: str) -> None:
        if tag in self._asleep:
            self.engine.wake_up(tags=[tag])
            self._asleep.discard(tag)

    def _push_weights(self) -> None:
        with torch.no_grad():
            self.engine.apply_model(_engine_model_loader(merged_weights(self.model)))
