"""The policy's full weights for engines that keep their own copy: merged LoRA, gathered FSDP shards."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from transformers import AutoModelForCausalLM

from azr.sharding import is_sharded, whole


def plain_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A detached `dtype` copy of a transformers model, with any LoRA adapter merged into its weights and
    any FSDP sharding gathered."""
    if is_sharded(model):
        # FSDP refuses to deep-copy a sharded model (and no rank has its whole weights to copy): build an
        # unsharded one, directly in `dtype` on the model's device, and gather the weights into it.
        with torch.device(next(model.parameters()).device):
            copied = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
        copied.generation_config = copy.deepcopy(model.generation_config)
        copy_weights(model, copied)
    else:
        copied = copy.deepcopy(model)
        if hasattr(copied, "merge_and_unload"):  # peft
            copied = copied.merge_and_unload()
        copied = copied.to(dtype)
    copied.requires_grad_(False)
    return copied


def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
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
