"""Which torch device a run uses, and whether bf16 is fast on it."""

from __future__ import annotations

import torch


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str) -> torch.device:
    """A `TrainConfig.device` value as a torch device ('auto': cuda when available)."""
    return _default_device() if device == "auto" else torch.device(device)


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 matmuls run at hardware speed on `device`: bf16-capable CUDA GPUs, and CPUs for which
    oneDNN has a bf16 path (AVX512 cores, AVX512-BF16, AMX). Elsewhere bf16 is emulated: on an AVX2-only
    CPU (AMD EPYC Milan) a bf16 matmul ran at 0.9 GFLOP/s against 119 GFLOP/s in fp32
    (`benchmarks/rollouts.py --bounds-only`)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
