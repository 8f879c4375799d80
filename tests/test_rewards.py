"""Rewards of both roles, including the learnability edge cases of both variants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from azr.rewards import RewardConfig, learnability_reward, proposer_reward, solve_rate, solver_reward

PAPER = RewardConfig()
REFERENCE = RewardConfig(learnability="reference")


@pytest.mark.parametrize(
    ("acc", "paper", "reference"),
    [(0.0, 0.0, -0.5), (1.0, 0.0, -0.5), (1 / 8, 7 / 8, 7 / 8), (7 / 8, 1 / 8, 1 / 8), (0.5, 0.5, 0.5)],
)
def test_learnability_edge_cases(acc: float, paper: float, reference: float) -> None:
    assert learnability_reward(acc, PAPER) == pytest.approx(paper)
    assert learnability_reward(acc, REFERENCE) == pytest.approx(reference)


def test_learnability_rejects_rates_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="solve rate"):
        learnability_reward(1.5, PAPER)


def test_solve_rate_over_learnability_samples() -> None:
    assert solve_rate([True, False, False, False, False, False, False, False]) == 1 / 8
    assert solve_rate([]) == 0.0


def test_proposer_reward_orders_format_invalid_and_learnable() -> None:
    assert proposer_reward(parsed=False, valid=False, acc=None, config=PAPER) == -1.0
    assert proposer_reward(parsed=True, valid=False, acc=None, config=PAPER) == -0.5
    assert proposer_reward(parsed=True, valid=True, acc=3 / 8, config=PAPER) == pytest.approx(5 / 8)
    assert proposer_reward(parsed=True, valid=True, acc=1.0, config=REFERENCE) == -0.5
    with pytest.raises(ValueError, match="solve rate"):
        proposer_reward(parsed=True, valid=True, acc=None, config=PAPER)


def test_solver_reward_with_and_without_composite_penalty() -> None:
    composite = RewardConfig(composite=True)
    assert solver_reward(parsed=True, correct=True, config=PAPER) == 1.0
    assert solver_reward(parsed=True, correct=False, config=PAPER) == 0.0
    assert solver_reward(parsed=False, correct=False, config=PAPER) == -1.0
    assert solver_reward(parsed=True, correct=False, config=composite) == -0.5
    assert solver_reward(parsed=False, correct=False, config=composite) == -1.0


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        RewardConfig(learnability="greedy")
    with pytest.raises(ValidationError):
        RewardConfig(format_penaltyy=-1.0)
