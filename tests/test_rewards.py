"""Rewards of both roles, including the learnability edge cases of both variants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from azr.rewards import RewardConfig, learnability_reward, proposer_reward, solve_rate, solver_reward

PAPER = RewardConfig()
REFERENCE = RewardConfig(learnability="reference", invalid_proposal_reward=-1.0)


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


# Every row of the documented table (azr.rewards docstring, README "Rewards"): role, case, paper, reference.
TABLE = [
    ("solve", "unparseable", -1.0, -1.0),
    ("solve", "wrong", -0.5, -0.5),
    ("solve", "right", 1.0, 1.0),
    ("propose", "unparseable", -1.0, -1.0),
    ("propose", "invalid", -0.5, -1.0),
    ("propose", "acc=3/8", 5 / 8, 5 / 8),
    ("propose", "acc=0", 0.0, -0.5),
    ("propose", "acc=1", 0.0, -0.5),
]


def reward_of(role: str, case: str, config: RewardConfig) -> float:
    if role == "solve":
        return solver_reward(parsed=case != "unparseable", correct=case == "right", config=config)
    acc = {"acc=3/8": 3 / 8, "acc=0": 0.0, "acc=1": 1.0}.get(case)
    return proposer_reward(parsed=case != "unparseable", valid=acc is not None, acc=acc, config=config)


@pytest.mark.parametrize(("role", "case", "paper", "reference"), TABLE)
def test_every_documented_case(role: str, case: str, paper: float, reference: float) -> None:
    assert reward_of(role, case, PAPER) == pytest.approx(paper)
    assert reward_of(role, case, REFERENCE) == pytest.approx(reference)


def test_the_documented_table_is_the_one_tested() -> None:
    import azr.rewards

    def value(cell: str) -> float:
        return 1 - 3 / 8 if cell == "1-acc" else float(cell)  # the tested 0 < acc < 1 case is 3/8

    rows = [line for line in azr.rewards.__doc__.splitlines() if line.startswith(("| solve", "| propose"))]
    documented = []
    for row in rows:
        role, _, paper, reference, _ = (cell.strip() for cell in row.strip("|").split("|"))
        documented.append((role, value(paper), value(reference)))
    # The table writes acc = 0 and acc = 1 as one row.
    tested = [(role, paper, reference) for role, case, paper, reference in TABLE if case != "acc=1"]
    assert documented == tested


def test_valid_proposals_need_their_solve_rate() -> None:
    with pytest.raises(ValueError, match="solve rate"):
        proposer_reward(parsed=True, valid=True, acc=None, config=PAPER)


def test_composite_off_gives_wrong_answers_zero() -> None:
    plain = RewardConfig(composite=False)
    assert solver_reward(parsed=True, correct=False, config=plain) == 0.0
    assert solver_reward(parsed=False, correct=False, config=plain) == -1.0
    assert solver_reward(parsed=True, correct=True, config=plain) == 1.0


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        RewardConfig(learnability="greedy")
    with pytest.raises(ValidationError):
        RewardConfig(format_penaltyy=-1.0)


def test_a_program_copy_earns_the_copy_reward_only_where_set_and_only_when_valid() -> None:
    penalised = RewardConfig(program_copy_reward=-0.5)
    # A valid copy of a buffer program: the copy reward instead of its learnability (3/8 solved: 5/8).
    assert proposer_reward(True, True, 3 / 8, penalised, program_copy=True) == -0.5
    assert proposer_reward(True, True, 1.0, penalised, program_copy=True) == -0.5
    assert proposer_reward(True, True, 3 / 8, penalised, program_copy=False) == pytest.approx(5 / 8)
    # Off (the paper): a copy is rewarded like any valid proposal.
    assert proposer_reward(True, True, 3 / 8, PAPER, program_copy=True) == pytest.approx(5 / 8)
    # Format and validity come first.
    assert proposer_reward(False, False, None, penalised, program_copy=True) == -1.0
    assert proposer_reward(True, False, None, penalised, program_copy=True) == -0.5
