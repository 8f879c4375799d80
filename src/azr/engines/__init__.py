"""Rollout engines: one interface (`azr.engines.base`), its implementations, and the factory.

    base                  SamplingParams, Completion, GenerationBackend: the contract every engine meets
    transformers_backend  the trainer's own transformers model, token by token with a KV cache
    snapshot              the engine's own bf16 or int8 copy of the weights (faster CPU decoding)
    vllm_backend          a vLLM engine colocated on the trainer's GPU
    weights               the policy's full weights for engines with their own copy (LoRA merged)

Importing this package loads neither torch nor an engine: `make_backend` imports the one it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from azr.engines.base import Completion, GenerationBackend, SamplingParams, chat_prompt, per_prompt_params

if TYPE_CHECKING:
    from azr.config import GenerationConfig
    from azr.policy import Policy

__all__ = [
    "BACKENDS",
    "Completion",
    "GenerationBackend",
    "SamplingParams",
    "chat_prompt",
    "make_backend",
    "per_prompt_params",
]

BACKENDS = ("transformers", "transformers-bf16", "transformers-int8", "vllm")


def make_backend(generation: GenerationConfig, policy: Policy, *, seed: int = 0) -> GenerationBackend:
    """The rollout backend named by `generation.backend`, on the policy's current weights.

    `transformers` samples with the trainer's own model object and its numerics (with bf16 compute:
    autocast, the Linear weights cast once per call), so its log-probs are the update's; on a GPU it is the
    default choice. `transformers-bf16` and `transformers-int8` keep their own copy in a faster form
    (`SnapshotBackend`: int8 is the fastest on a CPU; a sharded policy generates from the bf16 copy);
    `vllm` runs a colocated vLLM engine. The trainer calls `update_weights` after every optimizer step; an
    engine that keeps its own copy of the weights reloads them there, so it never generates from stale
    ones.
    """
    if generation.backend == "transformers":
        from azr.engines.transformers_backend import TransformersBackend

        return TransformersBackend.from_policy(
            policy, max_batch_size=generation.max_batch_size, share_prompts=generation.share_prompt_prefix
        )
    if generation.backend in ("transformers-bf16", "transformers-int8"):
        from azr.engines.snapshot import SnapshotBackend

        weights = "bfloat16" if generation.backend == "transformers-bf16" else "int8"
        return SnapshotBackend(
            policy,
            weights=weights,
            max_batch_size=generation.max_batch_size,
            share_prompts=generation.share_prompt_prefix,
        )
    if generation.backend == "vllm":
        from azr.engines.vllm_backend import VllmBackend

        return VllmBackend.launch(
            policy,
            gpu_memory_utilization=generation.vllm_gpu_memory_utilization,
            sleep_level=generation.vllm_sleep_level,
            seed=seed,
            max_model_len=generation.vllm_max_model_len,
        )
    raise ValueError(f"unknown generation backend {generation.backend!r}; known: {', '.join(BACKENDS)}")
