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
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from azr.advantages import PolicyLoss, policy_loss, token_advantages, trr_advantages
from azr.config import OptimConfig
from azr.distributed import SINGLE_PROCESS, World
from azr.policy import Policy, pack_sequences, pad_token_id, sequence_logprobs
from azr.sharding import is_sharded, whole

LOGGED_PARTS = ("loss", "policy", "entropy", "kl", "clip_fraction", "ratio")


@dataclass(frozen=True)
class TrainingSequence:
    """One trained response: its TRR++ group, tokens, behaviour log-probs and reward."""

    group: str  # "<task type>/<role>", one baseline each
    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    logprobs: Sequence[float]  # at sampling time, temperature 1 (azr.engines.base); unused when recomputed
    reward: float


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
    total_tokens = sum(len(s.response_ids) for s in sequences)
    pad_id = pad_token_id(policy.tokenizer)
    # Similar lengths together keep padding, and so wasted compute, small.
    order = sorted(
        range(len(sequences)), key=lambda i: len(sequences[i].prompt_ids) + len(sequences[i].response_ids)
    )
    # Dealing the length-sorted list out round-robin gives every rank about the same number of tokens.
    local = world.share(order)
    size = optim.micro_batch_size
    micro_batches = [(local[start : start + size], True) for start in range(0, len(local), size)]
    sharded = is_sharded(policy.model)
    if sharded:
        # Rank 0 has the largest share, ceil(len / world size) sequences; any sequence will do as filler.
        lockstep = math.ceil(math.ceil(len(sequences) / world.size) / size)
        micro_batches += [([order[0]], False)] * (lockstep - len(micro_batches))
    policy.model.train()
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    for indices, counted in micro_batches:
        batch = [sequences[i] for i in indices]
        result, tokens = _micro_batch_loss(policy, batch, advantages[indices], optim, pad_id, reference_model)
        share = tokens / total_tokens if counted else 0.0
        (result.loss * share).backward()
        for part in LOGGED_PARTS:
            totals[part] += float(getattr(result, part).detach()) * share
    if not sharded:  # sharded, the reduce-scatter in backward has summed them already
        world.sum_gradients(policy.trainable_parameters())
    grad_norm = whole(torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), optim.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    metrics = {
        f"update/{part}": value
        for part, value in world.sum_floats({p: totals[p] for p in LOGGED_PARTS}, policy.device).items()
    }
    metrics["update/grad_norm"] = float(grad_norm)
    metrics["update/tokens"] = total_tokens
    metrics["tokens_per_s/update"] = sum(len(s.prompt_ids) + len(s.response_ids) for s in sequences) / max(
        seconds, 1e-9
    )
    metrics.update(advantage_magnitudes(sequences, advantages.tolist()))
    if world.size > 1 and not sharded:  # sharded, the ranks hold different slices by design
        metrics["dp/replica_divergence"] = world.replica_divergence(policy.trainable_parameters())
    return UpdateResult(advantages.tolist(), metrics)


def _micro_batch_loss(
    policy: Policy,
    batch: Sequence[TrainingSequence],
    advantages: torch.Tensor,
    optim: OptimConfig,
    pad_id: int,
    reference_model: torch.nn.Module | None,
) -> tuple[PolicyLoss, int]:
    """The token-mean PPO-clip loss of one micro-batch, and how many response tokens it covers."""
    device = policy.device
    packed = pack_sequences([s.prompt_ids for s in batch], [s.response_ids for s in batch], pad_id)
    input_ids, attention_mask = packed.input_ids.to(device), packed.attention_mask.to(device)
    mask = packed.response_mask.to(device)
    with policy.autocast():
        if optim.recompute_logprobs:
            # The parameters do not move before the one optimizer step at the end, so scoring each
            # micro-batch just before its backward gives the behaviour log-probs of the whole step.
            with torch.no_grad():
                old_logprobs, _ = sequence_logprobs(
                    policy.model, input_ids, attention_mask, mask, chunk_size=optim.logprob_chunk_size
                )
        else:
            old_logprobs = torch.zeros(mask.shape, dtype=torch.float32)
            for row, sequence in enumerate(batch):
                old_logprobs[row, : len(sequence.logprobs)] = torch.tensor(
                    sequence.logprobs, dtype=torch.float32
                )
        logprobs, entropy = sequence_logprobs(
            policy.model, input_ids, attention_mask, mask, chunk_size=optim.logprob_chunk_size
        )
        reference_logprobs = None
        if reference_model is not None:
            with torch.no_grad():
                reference_logprobs, _ = sequence_logprobs(
                    reference_model, input_ids, attention_mask, mask, chunk_size=optim.logprob_chunk_size
                )
    result = policy_loss(
        logprobs,
        old_logprobs.to(device),
        token_advantages(advantages, mask.cpu()).to(device),
        mask,
        clip=optim.clip_ratio,
        entropy=entropy,
        entropy_coef=optim.entropy_coef,
        ref_logprobs=reference_logprobs,
        kl_coef=optim.kl_coef,
    )
    return result, int(mask.sum())


def advantage_magnitudes(
    sequences: Sequence[TrainingSequence], advantages: Sequence[float]
) -> dict[str, float]:
    """Mean |A| per group: 0 when a group's rewards were all equal (no learning signal in that group)."""
    members: dict[str, list[float]] = defaultdict(list)
    for sequence, advantage in zip(sequences, advantages, strict=True):
        members[sequence.group].append(abs(advantage))
    return {f"advantage_abs/{group}": sum(values) / len(values) for group, values in sorted(members.items())}
