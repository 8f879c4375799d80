"""Rewards of both roles, as pure functions of parse and executor outcomes.

Every case, in the paper (Zhao et al. 2025, eqs. 4-6: learnability, solver accuracy and the format-aware
composite penalty) and in the published reference code (its `CodeIORewardManager`, training split):

| role    | case                        | paper | reference | `RewardConfig` field                |
|---------|-----------------------------|-------|-----------|-------------------------------------|
| solve   | response cannot be parsed   | -1    | -1        | `format_penalty`                    |
| solve   | parsed, wrong answer        | -0.5  | -0.5      | `wrong_answer_reward` (`composite`) |
| solve   | parsed, right answer        | 1     | 1         | (fixed)                             |
| propose | response cannot be parsed   | -1    | -1        | `format_penalty`                    |
| propose | parsed, executor rejects it | -0.5  | -1        | `invalid_proposal_reward`           |
| propose | valid, 0 < acc < 1          | 1-acc | 1-acc     | (fixed)                             |
| propose | valid, acc = 0 or acc = 1   | 0     | -0.5      | `learnability`                      |

The defaults are the paper's. The reference code gives a program that fails validation a format score of
0, hence the format penalty, and maps a proposer reward of 0 (acc in {0, 1}) to -0.5 like any other
"well formatted but wrong" response. `composite: false` drops the -0.5 for wrong solver answers (solver
reward exactly 1[correct], as in the paper's eq. 5 read without eq. 6).

`program_copy_reward` is an optional diversity term, off by default as in the paper: with
`selfplay.distinct_programs`, a valid proposal whose program its buffer already has (up to names and
layout) gets this reward instead of its learnability. Without it a renamed copy of the identity seed is
always valid and earns 0, more than any invalid proposal, and a 0.5B proposer converges on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Reward switches; the defaults are the paper's (table in the module docstring). To reproduce the
    reference code: `learnability: reference`, `invalid_proposal_reward: -1.0`."""

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
        "nondeterministic, too few induction inputs): -0.5 in the paper ('wrong but well formatted'), "
        "-1 in the reference code.",
    )
    composite: bool = Field(
        True,
        description="Give well-formed but wrong solver answers `wrong_answer_reward` (paper and reference); "
        "false gives them 0.",
    )
    wrong_answer_reward: float = Field(-0.5, description="Solver reward for a wrong answer when `composite`.")
    program_copy_reward: float | None = Field(
        None,
        description="Proposer reward of a valid proposal whose program its buffer already has, up to names "
        "and layout (needs `selfplay.distinct_programs`); e.g. -0.5 ranks a copy with an invalid proposal. "
        "None (paper): a copy earns its learnability reward like any valid proposal.",
    )


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


def proposer_reward(
    parsed: bool, valid: bool, acc: float | None, config: RewardConfig, program_copy: bool = False
) -> float:
    """Reward of one proposer response: format penalty if unparsed, invalid reward if rejected, the
    program-copy reward (when set) for a valid copy of a buffer program, else learnability of the solve
    rate `acc` (required for other valid proposals)."""
    if not parsed:
        return config.format_penalty
    if not valid:
        return config.invalid_proposal_reward
    if program_copy and config.program_copy_reward is not None:
        return config.program_copy_reward
    if acc is None:
        raise ValueError("a valid proposal needs its solve rate")
    return learnability_reward(acc, config)


def solver_reward(parsed: bool, correct: bool, config: RewardConfig) -> float:
    """Reward of one solver response: format penalty if unparsed, 1 if correct, else the composite
    wrong-answer reward (0 when `composite` is off)."""
    if not parsed:
        return config.format_penalty
    if correct:
        return 1.0
    return config.wrong_answer_reward if config.composite else 0.0
