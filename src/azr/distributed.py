"""Data-parallel primitives on `torch.distributed`: joining the job a launcher started, and the few
collectives the trainer needs (Python objects from rank 0, objects to rank 0, sums of gradients and
scalars, a replica check).

A job is distributed when the launcher (torchrun, `accelerate launch`, srun with the torchrun variables)
sets WORLD_SIZE > 1; otherwise `SINGLE_PROCESS` stands in and every collective returns at once, so the
single-process path never touches `torch.distributed`. Tensors go over NCCL on CUDA and gloo on CPU;
pickled objects always go over a gloo group, so they never take a round trip through GPU memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job: `rank` of `size` processes, `local_rank` on its node.
    `sandbox_ranks` run a sandbox pool: rank 0 and the first process (LOCAL_RANK 0) of every other node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sandbox_ranks: tuple[int, ...] = (0,)
    object_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: every `size`-th one from position `rank`."""
        return list(items[self.rank :: self.size])

    def broadcast(self, value: Any = None) -> Any:
        """Rank 0's `value`, on every rank (the others' `value` is ignored)."""
        if self.size == 1:
            return value
        box = [value if self.is_leader else None]
        dist.broadcast_object_list(box, src=0, group=self.object_group)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value`, in rank order, on rank 0; None on the other ranks."""
        if self.size == 1:
            return [value]
        gathered = [None] * self.size if self.is_leader else None
        dist.gather_object(value, gathered, dst=0, group=self.object_group)
        return gathered

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its sum over ranks. A rank that had no sequence to train on has no
        gradient yet; it contributes zeros."""
        if self.size == 1:
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)

    def sum_floats(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each value summed over ranks (the same keys on every rank)."""
        if self.size == 1:
            return values
        keys = sorted(values)
        totals = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return dict(zip(keys, totals.tolist(), strict=True))

    def replica_divergence(self, parameters: Iterable[torch.nn.Parameter]) -> float:
        """Largest difference between ranks of any parameter tensor's sum and sum of squares: exactly 0
        while the replicas hold the same weights, which every step's all-reduced update must keep."""
        if self.size == 1:
            return 0.0
        sums = [
            torch.stack([p.detach().double().sum(), p.detach().double().square().sum()]) for p in parameters
        ]
        local = torch.cat(sums) if sums else torch.zeros(2, dtype=torch.float64)
        highest, lowest = local.clone(), local.clone()
        dist.all_reduce(highest, op=dist.ReduceOp.MAX)
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        return float((highest - lowest).max())


SINGLE_PROCESS = World()


def launched_world_size() -> int:
    """WORLD_SIZE as the launcher set it (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(timeout: timedelta) -> World:
    """Join the job the launcher started (its env:// variables), or `SINGLE_PROCESS` without one.

    On CUDA each rank takes the GPU of its LOCAL_RANK and tensors go over NCCL; on CPU over gloo.
    `timeout` bounds every collective: ranks other than 0 wait in one while rank 0 runs the sandbox,
    writes checkpoints or validates, so it must cover the longest of those.
    """
    size = launched_world_size()
    if size == 1:
        return SINGLE_PROCESS
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timeout)
    object_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    local_ranks: list[int | None] = [None] * size
    dist.all_gather_object(local_ranks, local_rank, group=object_group)
    sandbox_ranks = tuple(rank for rank, local in enumerate(local_ranks) if rank == 0 or local == 0)
    return World(dist.get_rank(), size, local_rank, sandbox_ranks, object_group)


def shutdown_distributed(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
