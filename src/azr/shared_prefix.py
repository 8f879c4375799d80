"""A prompt prefix shared by several trained sequences, forwarded once in the update.

Every prompt of a (type, role) starts with the same header, and with `selfplay.shared_references` or
`shared_solver_examples` the prompts of a (type, step) share their references or examples too. The update
(azr.update) forwards such a prefix once, with gradients, and reuses its keys and values for every
sequence of the group: each sequence's suffix (the rest of its prompt and its response) attends to the
prefix's keys and values through a `DynamicCache` whose tensors are the prefix's expanded to the
micro-batch's rows. The attention each suffix token computes is the one it computes in the whole
sequence (same keys, values, positions and mask), so log-probs, loss and gradients are the whole
sequences' (tests/test_shared_prefix.py, to 1e-5).

The grouping is pure (`shared_prefix_groups`); `prefix_key_values` and `expanded_cache` are the forward
pieces; `PrefixBackward` carries the gradients of several suffix micro-batches back through the prefix
in one backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from azr.policy import activation_checkpointed, decoder_states

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer, [rows, kv heads, length, head dim]


@dataclass(frozen=True)
class PrefixGroup:
    """Sequences (indices into the list given) whose prompts start with the same `length` tokens; a
    group with `length` 0 is one sequence forwarded whole."""

    members: tuple[int, ...]
    length: int


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading tokens two token lists share."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


def shared_prefix_groups(prompts: Sequence[Sequence[int]], min_tokens: int) -> list[PrefixGroup]:
    """Split the prompts into groups that share a prefix of at least `min_tokens`, and single sequences.

    Every index appears in exactly one group. A group's prefix stops before its shortest prompt's last
    token, so that every suffix still holds a prompt token: the hidden state that predicts a response's
    first token is then computed with the suffix. The split maximises the tokens not forwarded again,
    the sum over groups of (members − 1) × prefix length: in lexicographic order, sequences sharing a
    prefix are contiguous and a contiguous run shares the smallest common prefix of its neighbours, so
    a dynamic programme over that order finds the best split (a run of 500 shared tokens inside a header
    of 40 shared by more prompts is kept apart when that forwards fewer tokens).
    """
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    usable = [max(len(prompts[i]) - 1, 0) for i in order]
    neighbours = [
        min(common_prefix_length(prompts[order[k]], prompts[order[k + 1]]), usable[k], usable[k + 1])
        for k in range(len(order) - 1)
    ]
    # best[k]: most tokens saved by the first k sequences of `order`; split[k]: where its last group starts.
    best, split = [0] * (len(order) + 1), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best[end], split[end] = best[end - 1], end - 1
        shared = None
        for start in range(end - 2, -1, -1):
            shared = neighbours[start] if shared is None else min(shared, neighbours[start])
            if shared < max(min_tokens, 1):
                break
            saved = best[start] + (end - start - 1) * shared
            if saved > best[end]:
                best[end], split[end] = saved, start
    groups = []
    end = len(order)
    while end > 0:
        start = split[end]
        members = tuple(sorted(order[start:end]))
        length = min(neighbours[start : end - 1]) if len(members) > 1 else 0
        groups.append(PrefixGroup(members, length))
        end = start
    return sorted(groups, key=lambda group: min(group.members))


def supports_prefix_cache(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward can reuse a prefix's keys and values exactly in training.

    Not with gradient checkpointing: transformers' checkpointed decoder layers drop `past_key_values`
    (GradientCheckpointingLayer), so the suffix would attend to nothing before it. Not with sliding-window
    or other non-plain cache layers, whose caches keep only part of the prefix.
    """
    if activation_checkpointed(model):
        return False
    cache = DynamicCache(config=model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def prefix_key_values(model: torch.nn.Module, prefix_ids: torch.Tensor) -> KeyValues:
    """Every layer's keys and values of one unpadded prefix `[1, L]` (positions 0..L-1), with their
    autograd graph when gradients are enabled."""
    cache = DynamicCache(config=model.config)
    decoder_states(
        model,
        input_ids=prefix_ids,
        attention_mask=torch.ones_like(prefix_ids),
        past_key_values=cache,
        use_cache=True,
    )
    if cache.get_seq_length() != prefix_ids.shape[1]:
        # Checkpointed decoder layers, for one, drop the cache.
        raise RuntimeError("the model's layers did not fill the prefix cache: forward whole sequences")
    return [(layer.keys, layer.values) for layer in cache.layers]


def expanded_cache(key_values: KeyValues, rows: int) -> DynamicCache:
    """A fresh cache holding the prefix's keys and values once for each of `rows` sequences; gradients
    through it add up in `key_values`."""
    return DynamicCache(
        [(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)) for keys, values in key_values]
    )


class PrefixBackward:
    """The prefix's keys and values as leaf tensors for the suffix micro-batches: each micro-batch's
    backward stops at the leaves and adds to their gradients; `backward` then runs the prefix's own
    backward once, with those summed gradients. Memory stays one prefix forward plus one micro-batch."""

    def __init__(self, key_values: KeyValues) -> None:
        self._outputs = [tensor for pair in key_values for tensor in pair]
        self.leaves: KeyValues = [
            (
                keys.detach().requires_grad_(keys.requires_grad),
                values.detach().requires_grad_(values.requires_grad),
            )
            for keys, values in key_values
        ]

    def backward(self) -> None:
        pairs = [
            (output, leaf.grad)
            for output, leaf in zip(self._outputs, (t for pair in self.leaves for t in pair), strict=True)
            if leaf.grad is not None
        ]
        if pairs:
            torch.autograd.backward([output for output, _ in pairs], [grad for _, grad in pairs])
