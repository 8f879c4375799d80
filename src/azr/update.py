"""The policy update of one self-play step: sequences → TRR++ advantages → PPO-clip loss → one optimizer step.

This is the one place that touches gradients. The loss is one token mean over every response token of
the step, whatever the micro-batching: each micro-batch's token-mean loss is weighted by its share of the
step's response tokens before `backward`.

Data-parallel (`world.size > 1`): every rank is given the whole step's sequences, so the TRR++ advantages
and the step's token count are computed from all of them, identically everywhere; each rank then runs
forward/backward on its share only, and the gradients are summed over ranks before clipping. Since every
share's loss is already weighted by its tokens over the *global* count, that sum is exactly the
single-process gradient, and the identical optimizer step on every rank keeps the replicas equal.

Sharded (FSDP2, `azr.sharding`): the same, except that FSDP's reduce-scatter sums the gradients during
backward, each rank steps only its slice of the parameters, and every rank runs as many micro-batches as
the rank with the largest share (a forward or backward is a collective there); a rank with fewer, or
none, repeats a sequence with weight 0 for the missing ones.

Behaviour log-probs (`optim.recompute_logprobs`): the parameters do not move before the step's one
optimizer step, so the trained forward pass's own log-probs, detached, are the trainer's behaviour
log-probs; no second pass is needed (the ratio is exactly 1, and `update/engine_ratio` shows what the
rollout engine's log-probs would have given). PPO epochs, several optimizer steps on one batch, would need
them scored before the first step; azr runs none.

Shared prompt prefixes (`optim.share_prompt_prefix`, azr.shared_prefix): a rank's sequences whose
prompts start with the same tokens are grouped; a group's prefix is forwarded once, its keys and values
serve each micro-batch of the group's suffixes, and its backward runs once after them, with their
gradients summed. The other sequences are micro-batched whole, as before.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from azr.advantages import PolicyLoss, masked_mean, policy_loss, token_advantages, trr_advantages
from azr.config import OptimConfig
from azr.distributed import SINGLE_PROCESS, World
from azr.policy import Policy, pack_sequences, pad_token_id, sequence_logprobs
from azr.sharding import is_sharded, whole
from azr.shared_prefix import (
    KeyValues,
    PrefixBackward,
    expanded_cache,
    prefix_key_values,
    shared_prefix_groups,
    supports_prefix_cache,
)

LOGGED_PARTS = ("loss", "policy", "entropy", "kl", "clip_fraction", "ratio")
# With recomputed behaviour log-probs the ratio is 1 by construction; what the rollout engine's own
# log-probs would have given instead (its importance ratio and clipped share) shows how far it is off.
ENGINE_PARTS = ("engine_ratio", "engine_clip_fraction")
# A prefix this short is forwarded with every sequence: a separate forward and backward of a few tokens
# saves less than it costs in calls.
MIN_SHARED_PREFIX_TOKENS = 8


@dataclass(frozen=True)
class TrainingSequence:
    """One trained response: its TRR++ group, tokens, behaviour log-probs and reward."""

    group: str  # "<task type>/<role>", one baseline each
    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    logprobs: Sequence[float]  # at sampling time, temperature 1 (azr.engines.base); unused when recomputed
    reward: float
    trained: Sequence[bool] | None = None  # per response token, whether the loss counts it; None: all

    @property
    def trained_tokens(self) -> int:
        return len(self.response_ids) if self.trained is None else sum(map(bool, self.trained))


@dataclass(frozen=True)
class UpdateResult:
    advantages: list[float]  # one per sequence, in the order given
    metrics: dict[str, float]


def make_optimizer(policy: Policy, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters (all of them, or the LoRA adapter)."""
    return torch.optim.AdamW(
        policy.trainable_parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
    )


def policy_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    sequences: Sequence[TrainingSequence],
    optim: OptimConfig,
    *,
    reference_model: torch.nn.Module | None = None,
    world: World = SINGLE_PROCESS,
) -> UpdateResult:
    """One PPO-clip step on all sequences of a step, with advantages normalised per (type, role) group.

    With `world.size > 1`, call it on every rank with the same `sequences`: each rank trains on its share
    (see the module docstring) and all return the same advantages and metrics.
    """
    if not sequences:
        raise ValueError("a policy update needs at least one sequence")
    rewards = torch.tensor([s.reward for s in sequences], dtype=torch.float32)
    advantages = trr_advantages(rewards, [s.group for s in sequences], eps=optim.advantage_eps)
    total_tokens = sum(s.trained_tokens for s in sequences)
    pad_id = pad_token_id(policy.tokenizer)
    # Similar lengths together keep padding, and so wasted compute, small.
    order = sorted(
        range(len(sequences)), key=lambda i: len(sequences[i].prompt_ids) + len(sequences[i].response_ids)
    )
    # Dealing the length-sorted list out round-robin gives every rank about the same number of tokens.
    local = world.share(order)
    size = optim.micro_batch_size
    sharded = is_sharded(policy.model)
    # Sharded, every forward and backward is a collective and the ranks must run the same number of
    # them; prefix groups differ from rank to rank, so the sharded update forwards whole sequences.
    share_prefixes = (
        optim.share_prompt_prefix
        and not sharded
        and supports_prefix_cache(policy.model)
        and (reference_model is None or supports_prefix_cache(reference_model))
    )
    units = plan_micro_batches(
        [sequences[i].prompt_ids for i in local],
        [len(sequences[i].response_ids) for i in local],
        size,
        MIN_SHARED_PREFIX_TOKENS if share_prefixes else None,
    )
    units = [replace(unit, batches=[[local[i] for i in batch] for batch in unit.batches]) for unit in units]
    if sharded:
        # Rank 0 has the largest share, ceil(len / world size) sequences; any sequence will do as filler.
        lockstep = math.ceil(math.ceil(len(sequences) / world.size) / size)
        fillers = lockstep - sum(len(unit.batches) for unit in units)
        units.append(MicroBatchPlan(0, [[order[0]]] * fillers, counted=False))
    engine_gap = optim.recompute_logprobs and all(len(s.logprobs) == len(s.response_ids) for s in sequences)
    logged = LOGGED_PARTS + (ENGINE_PARTS if engine_gap else ())
    policy.model.train()
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    positions = 0
    started = time.perf_counter()
    for unit in units:
        prefix = None
        if unit.prefix_length:
            prefix_ids = sequences[unit.batches[0][0]].prompt_ids[: unit.prefix_length]
            prefix = _forward_prefix(policy, reference_model, prefix_ids)
            positions += unit.prefix_length
        for indices in unit.batches:
            batch = [sequences[i] for i in indices]
            scored = _micro_batch_loss(
                policy, batch, advantages[indices], optim, pad_id, reference_model, prefix
            )
            share = scored.tokens / max(total_tokens, 1) if unit.counted else 0.0
            (scored.loss.loss * share).backward()
            positions += scored.positions
            parts = {part: getattr(scored.loss, part) for part in LOGGED_PARTS}
            if engine_gap:
                parts.update(zip(ENGINE_PARTS, scored.engine_gap, strict=True))
            for part, value in parts.items():
                totals[part] += float(value.detach()) * share
        if prefix is not None:
            prefix.policy.backward()
    if not sharded:  # sharded, the reduce-scatter in backward has summed them already
        world.sum_gradients(policy.trainable_parameters())
    grad_norm = whole(torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), optim.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    summed = world.sum_floats(
        {**{p: totals[p] for p in logged}, "positions": float(positions)}, policy.device
    )
    metrics = {f"update/{part}": summed[part] for part in logged}
    metrics["update/grad_norm"] = float(grad_norm)
    metrics["update/tokens"] = total_tokens
    metrics["update/sequence_tokens"] = sum(len(s.prompt_ids) + len(s.response_ids) for s in sequences)
    # What the forward passes ran over: padding included, a shared prefix once.
    metrics["update/forward_positions"] = summed["positions"]
    metrics["tokens_per_s/update"] = metrics["update/sequence_tokens"] / max(seconds, 1e-9)
    metrics.update(advantage_magnitudes(sequences, advantages.tolist()))
    if world.size > 1 and not sharded:  # sharded, the ranks hold different slices by design
        metrics["dp/replica_divergence"] = world.replica_divergence(policy.trainable_parameters())
    return UpdateResult(advantages.tolist(), metrics)


@dataclass(frozen=True)
class MicroBatchPlan:
    """Micro-batches (lists of indices) of one shared prefix of `prefix_length` tokens, forwarded once
    before them; with `prefix_length` 0, micro-batches of whole sequences."""

    prefix_length: int
    batches: list[list[int]]
    counted: bool = True  # False: fillers that keep sharded ranks in lockstep, weight 0


def plan_micro_batches(
    prompts: Sequence[Sequence[int]], response_lengths: Sequence[int], size: int, min_shared: int | None
) -> list[MicroBatchPlan]:
    """Micro-batches of at most `size` sequences over indices into `prompts`, in the order given.

    With `min_shared` (None: no sharing), sequences whose prompts share at least that many leading tokens
    are grouped (`shared_prefix_groups`) and their suffixes micro-batched, shortest first, after their
    prefix; the others are micro-batched whole in the order given (the update gives them sorted by length).
    """
    groups = shared_prefix_groups(prompts, min_shared) if min_shared is not None else []
    shared = [group for group in groups if group.length]
    grouped = {i for group in shared for i in group.members}
    alone = [i for i in range(len(prompts)) if i not in grouped]
    plans = [MicroBatchPlan(0, _chunks(alone, size))] if alone else []
    for group in shared:
        members = sorted(group.members, key=lambda i: len(prompts[i]) + response_lengths[i])
        plans.append(MicroBatchPlan(group.length, _chunks(members, size)))
    return plans


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass(frozen=True)
class _Prefix:
    """A shared prefix forwarded once: the policy's keys and values as leaves for the suffixes (and the
    backward through it), and the reference model's, without gradients, for the KL term."""

    length: int
    policy: PrefixBackward
    reference: KeyValues | None


def _forward_prefix(
    policy: Policy, reference_model: torch.nn.Module | None, prefix_ids: Sequence[int]
) -> _Prefix:
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=policy.device)
    with policy.autocast():
        key_values = prefix_key_values(policy.model, ids)
        reference = None
        if reference_model is not None:
            with torch.no_grad():
                reference = prefix_key_values(reference_model, ids)
    return _Prefix(len(prefix_ids), PrefixBackward(key_values), reference)


@dataclass(frozen=True)
class _Scored:
    loss: PolicyLoss
    tokens: int  # response tokens
    positions: int  # columns × rows the forward ran over, padding included
    engine_gap: tuple[torch.Tensor, torch.Tensor]  # ENGINE_PARTS, when recomputing


def _micro_batch_loss(
    policy: Policy,
    batch: Sequence[TrainingSequence],
    advantages: torch.Tensor,
    optim: OptimConfig,
    pad_id: int,
    reference_model: torch.nn.Module | None,
    prefix: _Prefix | None,
) -> _Scored:
    """The token-mean PPO-clip loss of one micro-batch (after `prefix`, when its sequences share one)."""
    device = policy.device
    skip = prefix.length if prefix is not None else 0
    packed = pack_sequences([s.prompt_ids[skip:] for s in batch], [s.response_ids for s in batch], pad_id)
    input_ids, attention_mask = packed.input_ids.to(device), packed.attention_mask.to(device)
    if prefix is not None:
        attention_mask = torch.cat([attention_mask.new_ones((len(batch), skip)), attention_mask], dim=1)
    mask = packed.response_mask.to(device)
    loss_mask = packed.response_mask.clone()
    for row, sequence in enumerate(batch):
        if sequence.trained is not None:
            loss_mask[row, : len(sequence.trained)] = torch.tensor(list(sequence.trained), dtype=torch.bool)
    loss_mask = loss_mask.to(device)

    def score(model: torch.nn.Module, key_values: KeyValues | None) -> tuple[torch.Tensor, torch.Tensor]:
        cache = expanded_cache(key_values, len(batch)) if key_values is not None else None
        return sequence_logprobs(
            model, input_ids, attention_mask, mask, chunk_size=optim.logprob_chunk_size, past_key_values=cache
        )

    engine_logprobs = torch.zeros(mask.shape, dtype=torch.float32)
    for row, sequence in enumerate(batch):
        engine_logprobs[row, : len(sequence.logprobs)] = torch.tensor(sequence.logprobs, dtype=torch.float32)
    engine_logprobs = engine_logprobs.to(device)
    with policy.autocast():
        logprobs, entropy = score(policy.model, prefix.policy.leaves if prefix is not None else None)
        if not optim.recompute_logprobs:
            old_logprobs = engine_logprobs
        elif optim.separate_logprob_pass:
            with torch.no_grad():
                old_logprobs, _ = score(policy.model, prefix.policy.leaves if prefix is not None else None)
        else:
            # One optimizer step per self-play step: the parameters have not moved since sampling, so the
            # behaviour log-probs are this very forward's (ratio exactly 1).
            old_logprobs = logprobs.detach()
        reference_logprobs = None
        if reference_model is not None:
            with torch.no_grad():
                reference_logprobs, _ = score(
                    reference_model, prefix.reference if prefix is not None else None
                )
    result = policy_loss(
        logprobs,
        old_logprobs,
        token_advantages(advantages, loss_mask.cpu()).to(device),
        loss_mask,
        clip=optim.clip_ratio,
        entropy=entropy,
        entropy_coef=optim.entropy_coef,
        ref_logprobs=reference_logprobs,
        kl_coef=optim.kl_coef,
    )
    engine_ratio = torch.exp(old_logprobs - engine_logprobs)
    engine_gap = (
        masked_mean(engine_ratio, loss_mask),
        masked_mean(((engine_ratio - 1.0).abs() > optim.clip_ratio).float(), loss_mask),
    )
    return _Scored(result, int(loss_mask.sum()), input_ids.numel(), engine_gap)


def advantage_magnitudes(
    sequences: Sequence[TrainingSequence], advantages: Sequence[float]
) -> dict[str, float]:
    """Mean |A| per group: 0 when a group's rewards were all equal (no learning signal in that group)."""
    members: dict[str, list[float]] = defaultdict(list)
    for sequence, advantage in zip(sequences, advantages, strict=True):
        members[sequence.group].append(abs(advantage))
    return {f"advantage_abs/{group}": sum(values) / len(values) for group, values in sorted(members.items())}
