"""Sharded data parallelism with FSDP2 (`distributed.sharding: fsdp2`): the policy's parameters, gradients
and optimizer state split over the ranks, and the whole state dicts a checkpoint holds gathered back.

`fully_shard` (torch.distributed.fsdp) makes every decoder layer one group and the model's root another
(embeddings, final norm, LM head). Each rank keeps a 1/N slice of every parameter, a DTensor sharded on
dim 0, and AdamW keeps its moments for that slice only: full fine-tuning costs 16 bytes per parameter
divided by N on each GPU instead of 16. A group's slices are all-gathered before its forward (and again
before its backward) and its gradients are reduce-scattered after it. What that changes elsewhere:

- gradients: the reduce-scatter SUMS over ranks (FSDP2 averages by default). Each rank's micro-batches are
  weighted by their tokens over the step's global token count (azr.update), so the sum is the
  single-process gradient, exactly as `World.sum_gradients` gives it without sharding;
- clipping: `clip_grad_norm_` on DTensor gradients takes the global norm over every shard;
- lockstep: every forward and backward is a collective, so every rank runs as many micro-batches as the
  rank with the largest share; the extra ones carry weight 0 (azr.update);
- generation: no rank holds a whole weight, so rollouts come from an engine with its own full copy
  (`transformers-bf16` or `vllm`), refreshed after every update by gathering the shards one tensor at a
  time (`azr.engines.weights.merged_weights`);
- checkpoints: all ranks gather the shards into the usual full state dicts and rank 0 writes them, so a
  run directory looks the same with or without sharding; on resume every rank reads them and keeps its
  own slice (`restore_optimizer`).

Every rank loads the full float32 weights into CPU memory first (4 bytes per parameter per rank, only
while loading); `fully_shard` then moves each rank's slice to its GPU.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from azr.config import TrainConfig
from azr.devices import resolve_device
from azr.distributed import World
from azr.policy import Policy, load_configured_policy

log = logging.getLogger(__name__)


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor behind a shard (an all-gather every rank must join), or `tensor` itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def load_training_policy(config: TrainConfig, checkpoint_model: Path | None, world: World) -> Policy:
    """The policy a run trains, as `load_configured_policy` loads it, and sharded over the ranks when
    `distributed.sharding` is fsdp2 in a job of several processes (one process has nothing to shard)."""
    if config.distributed.sharding == "none" or world.size == 1:
        if config.distributed.sharding == "fsdp2":
            log.warning("distributed.sharding fsdp2 in one process: nothing to shard, the model stays whole")
        return load_configured_policy(config.model, config.device, checkpoint_model)
    policy = load_configured_policy(config.model, "cpu", checkpoint_model)
    return shard_policy(policy, world, resolve_device(config.device))


def shard_policy(policy: Policy, world: World, device: torch.device) -> Policy:
    """Shard the policy's model in place over all ranks, one group per decoder layer plus the root, and
    move each rank's slices to `device`. Returns the policy with its device set to `device`."""
    model = policy.model
    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class (transformers' _no_split_modules), so "
            "it cannot be sharded layer by layer; use distributed.sharding: none"
        )
    mesh = init_device_mesh(device.type, (world.size,))
    for module in [*layers, model]:  # bottom-up: the root takes the parameters no layer took
        fully_shard(module, mesh=mesh)
        # Sum, not average, over ranks; forcing plain SUM collectives (divided by 1, i.e. not at all)
        # also keeps gloo working, which has no pre-multiplied sum.
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)
    return replace(policy, device=device)


def full_state_dicts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, keep: bool
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The model's and the optimizer's state dicts with every shard gathered whole, in the format
    `state_dict()` has without sharding, so checkpoints are the same either way.

    Sharded tensors are all-gathered one at a time: on a sharded model every rank must call this at the
    same point. Only where `keep` (rank 0) are the gathered tensors kept, in CPU memory, and returned;
    elsewhere each is dropped at once and None is returned. Unsharded tensors are returned as they are.
    """
    gathered: dict[int, torch.Tensor | None] = {}  # by id: a tied weight is listed under two names

    @torch.no_grad()
    def gather(value: Any) -> Any:
        if not isinstance(value, DTensor):
            return value.detach() if isinstance(value, torch.Tensor) else value
        if id(value) not in gathered:
            full = value.full_tensor()
            gathered[id(value)] = full.cpu() if keep else None
        return gathered[id(value)]

    # keep_vars: the parameters themselves, so a tied weight is one object under both names (and one
    # tensor in the result, which save_pretrained then writes once, as it does for an unsharded model).
    model_state = {name: gather(tensor) for name, tensor in model.state_dict(keep_vars=True).items()}
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = {
        index: {key: gather(value) for key, value in state.items()}
        for index, state in optimizer_state["state"].items()
    }
    return (model_state, optimizer_state) if keep else None


def restore_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load a full optimizer state dict (`optimizer.pt`) into `optimizer`; for a sharded parameter each
    rank keeps only its own slice of the state (sliced locally, no communication).

    The file is memory-mapped, so the ranks of one node share its pages instead of each holding a copy.
    """
    state = torch.load(path, weights_only=True, mmap=True)
    # state_dict() numbers the parameters in param-group order, from 0.
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    for index, saved in state["state"].items():
        parameter = parameters[index]
        if not isinstance(parameter, DTensor):
            continue
        for key, value in saved.items():
            if value.shape == parameter.shape:  # the moments; AdamW's step count is a scalar
                saved[key] = distribute_tensor(
                    value, parameter.device_mesh, parameter.placements, src_data_rank=None
                )
    optimizer.load_state_dict(state)
