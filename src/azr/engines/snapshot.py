"""Generation from the engine's own copy of the policy's weights, in bf16 or int8, for faster CPU decoding."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from azr.engines.transformers_backend import TransformersBackend
from azr.engines.weights import copy_weights, plain_copy
from azr.policy import Policy


class SnapshotBackend(TransformersBackend):
    """Generation from the backend's own copy of the policy's weights, kept in a faster form: `bfloat16`
    weights (half the memory traffic of float32; fast on GPUs and on CPUs with AVX512-BF16 or AMX; the
    copy a sharded policy generates from) or `int8` (CPU only: linear layers quantised dynamically with
    torch's fbgemm kernels, a quarter of the traffic). Decoding is `TransformersBackend`'s.

    This is the shape of any engine with its own weights (vLLM on a GPU, a CPU inference engine):
    `update_weights` must be called after every optimizer step, and copies the trainer's current weights
    in (LoRA adapters merged), so no rollout ever comes from stale weights. Its log-probs are those of the
    copy's numerics, not the trainer's: either recompute them with the trainer's model
    (`optim.recompute_logprobs: true`; measured with an int8 copy of Qwen2.5-Coder-0.5B, 27% of tokens
    were outside the PPO clip range otherwise) or keep them, and the update's PPO ratio is then a clipped
    importance weight between the two (`update/clip_fraction` shows how often it clips).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        weights: Literal["bfloat16", "int8"],
        max_batch_size: int = 256,
        share_prompts: bool = True,
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
            share_prompts=share_prompts,
        )

    def update_weights(self, model: torch.nn.Module) -> None:
        """Replace the copy with the trainer's current weights."""
        if self.weights == "bfloat16":
            copy_weights(model, self.model)
        else:
            self.model = self._snapshot(model)

    def _snapshot(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.weights == "bfloat16":
            return plain_copy(model, torch.bfloat16).eval()
        plain = plain_copy(model, torch.float32)
        with warnings.catch_warnings():
            # torch.ao's dynamic quantisation is deprecated in favour of torchao; it works in the pinned torch
            # (README, "Dependencies") and would otherwise warn at every weight sync.
            warnings.simplefilter("ignore", UserWarning)
            return torch.ao.quantization.quantize_dynamic(plain.eval(), {torch.nn.Linear}, dtype=torch.qint8)
