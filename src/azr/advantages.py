"""TRR++ advantages and the PPO-clip policy loss (the paper's Task-Relative REINFORCE++), as pure functions on
tensors, testable without a model.

Shapes: B sequences, T response tokens (padded); `mask` is 1 on real response tokens, 0 on padding.

Choices made here (the paper leaves them open):
- the group std is the population std (divide by the group size), so a group of one, or a group where all
  rewards are equal, gets advantage exactly 0: no signal, instead of NaN from a sample std;
- losses are token means over all response tokens of the whole batch (not per-sequence means), so long and
  short responses weigh per token, as in the reference's token-mean aggregation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_EPS = 1e-6
DEFAULT_CLIP = 0.2


def trr_advantages(rewards: Tensor, groups: Sequence[Hashable], eps: float = DEFAULT_EPS) -> Tensor:
    """A = (r − mean_g) / (std_g + eps) within each group g, e.g. `("deduction", "propose")`.

    `rewards` has shape (B,), `groups[i]` names sequence i's group. Returns shape (B,), float32.
    """
    if rewards.dim() != 1 or len(groups) != rewards.shape[0]:
        raise ValueError(
            f"need one group per reward: {len(groups)} groups for rewards of shape {tuple(rewards.shape)}"
        )
    rewards = rewards.float()
    advantages = torch.zeros_like(rewards)
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    for indices in members.values():
        selection = torch.tensor(indices, dtype=torch.long, device=rewards.device)
        values = rewards[selection]
        centred = values - values.mean()
        std = values.std(correction=0)
        advantages[selection] = centred / (std + eps)
    return advantages


def token_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-sequence advantages (B,) to every response token (B, T): with the reward on the last
    token and γ = 1, every token's return is the sequence's reward."""
    return advantages[:, None] * mask.to(advantages.dtype)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over positions where `mask` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy ‖ reference): exp(d) − d − 1 with d = ref − policy log-prob.
    Non-negative and unbiased for samples drawn from the policy."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of each position's next-token distribution, shape (..., V) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


@dataclass(frozen=True)
class PolicyLoss:
    """The loss to minimise and its parts, for logging (all scalars; parts are detached)."""

    loss: Tensor
    policy: Tensor
    entropy: Tensor
    kl: Tensor
    clip_fraction: Tensor
    ratio: Tensor


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip: float = DEFAULT_CLIP,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
) -> PolicyLoss:
    """PPO clipped surrogate, token mean over the batch, minus an optional entropy bonus, plus an optional
    k3 KL penalty to a reference policy.

    `logprobs` (B, T) are the current policy's log-probs of the sampled tokens (with grad), `old_logprobs`
    those at sampling time; `advantages` is (B,) or already (B, T); `entropy` (B, T) per-token entropies.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    policy = masked_mean(-torch.minimum(unclipped, clipped), mask)
    loss = policy
    zero = torch.zeros((), device=logprobs.device)
    entropy_mean = masked_mean(entropy, mask) if entropy is not None else zero
    if entropy is not None and entropy_coef:
        loss = loss - entropy_coef * entropy_mean
    kl = masked_mean(kl_k3(logprobs, ref_logprobs.detach()), mask) if ref_logprobs is not None else zero
    if ref_logprobs is not None and kl_coef:
        loss = loss + kl_coef * kl
    clipped_tokens = ((ratio - 1.0).abs() > clip).to(logprobs.dtype)
    return PolicyLoss(
        loss=loss,
        policy=policy.detach(),
        entropy=entropy_mean.detach(),
        kl=kl.detach(),
        clip_fraction=masked_mean(clipped_tokens, mask).detach(),
        ratio=masked_mean(ratio, mask).detach(),
    )
