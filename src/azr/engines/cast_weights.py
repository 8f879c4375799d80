"""Linear weights cast to the autocast dtype once per generation call instead of at every token.

Under bf16 autocast every `Linear` casts its float32 weight to bf16 each time it runs. Autocast's own cache
of those casts only keeps weights that require gradients (so not a LoRA adapter's frozen base) and only
while one autocast block lasts, so a decode loop recast all the weights at every token: 2 GB read and 1 GB
written per token for a 0.5B model. Swapping in the casts themselves for the length of the call gives the
Linear layers exactly the bf16 tensors autocast would have made (autocast leaves a bf16 weight as it is),
so every result is unchanged, and costs one bf16 copy of the Linear weights while the call lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def linear_weights_cast(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, every `torch.nn.Linear` of `model` holds `dtype` copies of its floating-point
    weight and bias (plain tensors only: sharded ones are left alone); the originals are put back after."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    casts: dict[int, torch.nn.Parameter] = {}  # tied weights (an LM head and its embeddings) cast once
    try:
        with torch.no_grad():
            for module in model.modules():
                if not isinstance(module, torch.nn.Linear):
                    continue
                for name, parameter in list(module._parameters.items()):
                    if (
                        parameter is None
                        or parameter.dtype == dtype
                        or type(parameter.data) is not torch.Tensor
                    ):
                        continue
                    if id(parameter) not in casts:
                        casts[id(parameter)] = torch.nn.Parameter(parameter.to(dtype), requires_grad=False)
                    swapped.append((module, name, parameter))
                    module._parameters[name] = casts[id(parameter)]
        yield
    finally:
        for module, name, parameter in reversed(swapped):
            module._parameters[name] = parameter
