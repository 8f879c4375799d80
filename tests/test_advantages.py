"""TRR++ advantages and the PPO-clip loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from azr.advantages import kl_k3, masked_mean, policy_loss, token_advantages, token_entropy, trr_advantages


def test_hand_worked_trr_example() -> None:
    # Four of the six (type, role) groups, interleaved as a trainer batch would mix them.
    groups = [
        ("deduction", "propose"),
        ("induction", "solve"),
        ("deduction", "propose"),
        ("abduction", "solve"),
        ("induction", "solve"),
        ("deduction", "propose"),
        ("abduction", "solve"),
        ("induction", "propose"),
        ("induction", "solve"),
        ("abduction", "solve"),
        ("induction", "solve"),
    ]
    rewards = torch.tensor([0.5, 1.0, -1.0, 1.0, 0.0, 0.0, 1.0, 0.875, 0.0, 1.0, 0.0])
    # deduction/propose [0.5, -1, 0]: mean -1/6, population std sqrt(7/18).
    std = math.sqrt(7 / 18)
    propose = [(2 / 3) / std, (-5 / 6) / std, (1 / 6) / std]
    # induction/solve [1, 0, 0, 0]: mean 1/4, std sqrt(3)/4 -> sqrt(3) and -1/sqrt(3).
    solve = [math.sqrt(3), -1 / math.sqrt(3)]
    expected = [
        propose[0],
        solve[0],
        propose[1],
        0.0,  # abduction/solve: all rewards equal -> no signal
        solve[1],
        propose[2],
        0.0,
        0.0,  # induction/propose: a group of one -> 0, not NaN
        solve[1],
        0.0,
        solve[1],
    ]
    advantages = trr_advantages(rewards, groups)
    assert advantages.tolist() == pytest.approx(expected, abs=1e-5)
    assert propose == pytest.approx([1.0690450, -1.3363062, 0.2672612], abs=1e-6)


def test_trr_rejects_mismatched_groups() -> None:
    with pytest.raises(ValueError, match="one group per reward"):
        trr_advantages(torch.zeros(3), ["a", "b"])


def test_advantages_broadcast_to_response_tokens_only() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert token_advantages(torch.tensor([2.0, -1.0]), mask).tolist() == [[2, 2, 0], [-1, -1, -1]]


def test_policy_loss_hand_computed() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    ratios = torch.tensor([[1.0, 1.5, 3.0], [0.5, 1.0, 1.1]])
    old = torch.log(torch.tensor([[0.2, 0.3, 0.4], [0.5, 0.6, 0.7]]))
    new = (old + torch.log(ratios)).requires_grad_()
    result = policy_loss(new, old, torch.tensor([1.0, -2.0]), mask, clip=0.2)
    # Tokens: -min(rA, clip(r)A) = -1, -1.2 (clipped), 1.6 (clipped), 2, 2.2 over 5 response tokens.
    assert result.loss.item() == pytest.approx(3.6 / 5)
    assert result.clip_fraction.item() == pytest.approx(2 / 5)
    assert result.ratio.item() == pytest.approx((1 + 1.5 + 0.5 + 1 + 1.1) / 5)
    result.loss.backward()
    # d/dlogp of -rA is -rA/5 where unclipped; clipped tokens and padding get no gradient.
    assert new.grad.flatten().tolist() == pytest.approx([-0.2, 0.0, 0.0, 0.0, 0.4, 0.44], abs=1e-6)


def test_entropy_bonus_and_kl_penalty_are_added_with_their_coefficients() -> None:
    mask = torch.tensor([[1, 1]])
    logprobs = torch.log(torch.tensor([[0.5, 0.5]]))
    reference = torch.log(torch.tensor([[0.25, 0.25]]))
    entropy = torch.tensor([[1.0, 3.0]])
    plain = policy_loss(logprobs, logprobs, torch.tensor([1.0]), mask)
    full = policy_loss(
        logprobs,
        logprobs,
        torch.tensor([1.0]),
        mask,
        entropy=entropy,
        entropy_coef=0.001,
        ref_logprobs=reference,
        kl_coef=0.1,
    )
    k3 = 0.5 + math.log(2) - 1  # exp(d) - d - 1 with d = log(0.25 / 0.5)
    assert plain.loss.item() == pytest.approx(-1.0)
    assert full.kl.item() == pytest.approx(k3)
    assert full.entropy.item() == pytest.approx(2.0)
    assert full.loss.item() == pytest.approx(-1.0 - 0.001 * 2.0 + 0.1 * k3)


def test_k3_is_zero_at_equal_policies_and_positive_elsewhere() -> None:
    logprobs = torch.log(torch.tensor([0.1, 0.5, 0.9]))
    assert kl_k3(logprobs, logprobs).tolist() == [0.0, 0.0, 0.0]
    assert (kl_k3(logprobs, logprobs.flip(0))[[0, 2]] > 0).all()


def test_token_entropy_and_masked_mean() -> None:
    assert token_entropy(torch.zeros(2, 4)).tolist() == pytest.approx([math.log(4)] * 2)
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item() == 2.0
    assert masked_mean(torch.tensor([1.0]), torch.tensor([0])).item() == 0.0
