"""Rewards of both roles (SPEC 5), as pure functions of parse and executor outcomes.

Solver: 1 if correct, else 0. Proposer: learnability 1 − acc of the current solver on the proposed task,
0 when the task is trivial (acc = 1) or impossible (acc = 0). Responses that cannot be parsed get the format
penalty; a parsed proposal the executor rejects gets the invalid-proposal reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Reward switches. The defaults are the paper's; `learnability="reference"` and `composite=True`
    reproduce the published reference code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learnability: Literal["paper", "reference"] = Field(
        "paper",
        description="Proposer reward when the solve rate is 0 or 1: 0 in the paper, -0.5 in the "
        "reference code.",
    )
    format_penalty: float = Field(
        -1.0, description="Reward of a response whose format cannot be parsed (either role)."
    )
    invalid_proposal_reward: float = Field(
        -0.5,
        description="Reward of a parsed proposal the executor rejects (error, timeout, banned, "
        "nondeterministic, too few induction inputs): the paper's 'well formed but wrong'.",
    )
    composite: bool = Field(
        False, description="Give well-formed but wrong solver answers `wrong_answer_reward` instead of 0."
    )
    wrong_answer_reward: float = Field(-0.5, description="Solver reward for a wrong answer when `composite`.")


REFERENCE_EXTREME_REWARD = -0.5
"""What the reference code gives a proposer whose task is solved always or never."""


def solve_rate(correct: Sequence[bool]) -> float:
    """Fraction of correct answers among the n learnability samples (0 for no samples)."""
    return sum(correct) / len(correct) if correct else 0.0


def learnability_reward(acc: float, config: RewardConfig) -> float:
    """1 − acc for 0 < acc < 1; at acc 0 or 1, 0 (paper) or −0.5 (reference)."""
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"solve rate must be in [0, 1], got {acc}")
    if 0.0 < acc < 1.0:
        return 1.0 - acc
    return 0.0 if config.learnability == "paper" else REFERENCE_EXTREME_REWARD


def proposer_reward(parsed: bool, valid: bool, acc: float | None, config: RewardConfig) -> float:
    """Reward of one proposer response: format penalty if unparsed, invalid reward if rejected, else
    learnability of the solve rate `acc` (required for valid proposals)."""
    if not parsed:
        return config.format_penalty
    if not valid:
        return config.invalid_proposal_reward
    if acc is None:
        raise ValueError("a valid proposal needs its solve rate")
    return learnability_reward(acc, config)


def solver_reward(parsed: bool, correct: bool, config: RewardConfig) -> float:
    """Reward of one solver response: format penalty if unparsed, 1 if correct, else 0 (or the composite
    wrong-answer reward)."""
    if not parsed:
        return config.format_penalty
    if correct:
        return 1.0
    return config.wrong_answer_reward if config.composite else 0.0
