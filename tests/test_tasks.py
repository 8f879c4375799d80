"""Task types: proposer prompt → parse → validate, solver prompt → parse → judge, with the real executor."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from azr.buffer import TaskBuffer
from azr.config import SelfPlayConfig
from azr.executor import Executor, ExecutorConfig, Status
from azr.parsing import BadFormat
from azr.prompts import get_format
from azr.tasks import (
    TASK_TYPES,
    Abduction,
    Deduction,
    Induction,
    Proposal,
    Task,
    TaskType,
    get_task_type,
)

COMPLETION = get_format("completion")
DOUBLE = Task("def f(x):\n    return x * 2", "3", "6")


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2, timeout_s=5.0)) as ex:
        yield ex


def test_registry_holds_the_three_types_behind_one_interface() -> None:
    assert set(TASK_TYPES) == {"deduction", "abduction", "induction"}
    for name, cls in TASK_TYPES.items():
        task_type = get_task_type(name)
        assert isinstance(task_type, TaskType) and isinstance(task_type, cls)
        assert task_type.template("propose") == f"{name}_propose"
    with pytest.raises(ValueError, match="unknown task type"):
        get_task_type("error_type")
    with pytest.raises(ValueError, match="at least 2"):
        Induction(n_inputs=1)


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_seed_tasks_are_valid_and_their_outputs_exact(name: str, executor: Executor) -> None:
    task_type = get_task_type(name)
    for task in task_type.seed_tasks():
        proposal = Proposal(task.program, task.input, task.inputs, task.message)
        validation = task_type.validate(executor, proposal).result()
        assert validation.task == task


def test_deduction_proposal_is_parsed_validated_and_gets_its_output(executor: Executor) -> None:
    deduction = Deduction()
    prompt = deduction.proposer_prompt(COMPLETION, [DOUBLE, *deduction.seed_tasks()])
    assert "assert f(3) == 6" in prompt.text and prompt.text.endswith("def f(")
    response = "s, n):\n    return s[::-1] * n\nassert f('ab', 2) == 'whatever the model claims'\n"
    proposal = deduction.parse_proposal(COMPLETION, prompt, response)
    assert proposal == Proposal("def f(s, n):\n    return s[::-1] * n", "'ab', 2")
    validation = deduction.validate(executor, proposal, step=7).result()
    assert validation.task == Task(proposal.program, "'ab', 2", "'baba'", step=7)


def test_invalid_and_unparsed_proposals_say_why(executor: Executor) -> None:
    deduction = Deduction()
    failing = Proposal("def f(x):\n    return 1 / x", "0")
    banned = Proposal("import random\ndef f(x):\n    return random.random()", "0")
    results = [
        future.result()
        for future in deduction.validate_batch(executor, [failing, banned, BadFormat("no assert line")])
    ]
    assert not any(result.valid for result in results)
    assert results[0].reason.startswith(Status.ERROR.value) and "ZeroDivisionError" in results[0].reason
    assert results[1].reason.startswith(Status.BANNED.value)
    assert results[2].reason == "bad format: no assert line"


def test_deduction_solver_round_trip(executor: Executor) -> None:
    deduction = Deduction()
    prompt = deduction.solver_prompt(COMPLETION, DOUBLE, examples=deduction.seed_tasks())
    assert prompt.endswith("assert f(3) ==")
    assert deduction.parse_answer(COMPLETION, " 6\n") == "6"
    verdicts = deduction.judge_batch(executor, [DOUBLE, DOUBLE, DOUBLE], ["6", "6.0", BadFormat("x")])
    assert [v.result().correct if v else None for v in verdicts] == [True, True, None]
    assert not deduction.judge(executor, DOUBLE, "7").result().correct


def test_abduction_accepts_any_input_that_reproduces_the_output(executor: Executor) -> None:
    abduction = Abduction()
    task = Task("def f(x):\n    return x % 3", "4", "1")
    prompt = abduction.solver_prompt(COMPLETION, task)
    assert prompt.endswith("assert 1 == f(")
    answer = abduction.parse_answer(COMPLETION, "7)  # seven\n")
    assert answer == "7"
    assert abduction.judge(executor, task, answer).result().correct
    assert not abduction.judge(executor, task, "3").result().correct


def test_induction_keeps_proposals_with_enough_distinct_valid_inputs(executor: Executor) -> None:
    induction = Induction(n_inputs=4)
    program = "def f(x):\n    return 10 // x"
    prompt = induction.proposer_prompt(COMPLETION, [Task(program, "1", "10"), *induction.seed_tasks()])
    assert prompt.program == program and prompt.text.endswith("\ndef test_f():\n    # ")
    lines = [
        "Integer division of ten.",
        *(f"    assert f({x}) == ?" for x in (1, 2, 2, 0, 5)),
        "    print(f(10))",
    ]
    proposal = induction.parse_proposal(COMPLETION, prompt, "\n".join(lines))
    assert proposal == Proposal(
        program, inputs=("1", "2", "0", "5", "10"), message="Integer division of ten."
    )
    task = induction.validate(executor, proposal, step=3).result().task
    assert task == Task(
        program, inputs=("1", "2", "5", "10"), outputs=("10", "5", "2", "1"), message=proposal.message, step=3
    )
    assert induction.split(task) == ([("1", "10"), ("2", "5")], [("5", "2"), ("10", "1")])
    too_few = Proposal(program, inputs=("1", "0", "'a'", "2"), message="m")
    assert induction.validate(executor, too_few).result().reason == "only 2 valid distinct inputs, need 4"


def test_induction_solver_sees_half_and_is_judged_on_the_rest(executor: Executor) -> None:
    induction = Induction(n_inputs=4)
    task = Task(
        "def f(x):\n    return x + 1",
        inputs=("1", "2", "3", "4"),
        outputs=("2", "3", "4", "5"),
        message="Add.",
    )
    prompt = induction.solver_prompt(COMPLETION, task)
    assert "assert f(2) == 3" in prompt and "f(3)" not in prompt and prompt.endswith("def f(")
    answer = induction.parse_answer(COMPLETION, "y):\n    return y + 1\nassert f(9) == 10")
    assert answer == "def f(y):\n    return y + 1"
    assert induction.judge(executor, task, answer).result().correct
    # Right on the shown pairs only: wrong on the held-out ones.
    overfit = "def f(y):\n    return {1: 2, 2: 3}[y]"
    assert not induction.judge(executor, task, overfit).result().correct


def test_induction_takes_its_program_from_the_program_buffers_and_its_examples_from_its_own() -> None:
    pools = {name: TaskBuffer(":memory:", name) for name in ("deduction", "abduction", "induction")}
    pools["deduction"].add([DOUBLE])
    pools["abduction"].add([Task("def f(s):\n    return s[::-1]", "'ab'", "'ba'")])
    induction = Induction(n_inputs=4)
    pools["induction"].add(induction.seed_tasks())
    rng = random.Random(0)
    drawn = [induction.proposer_references(pools, rng, 3) for _ in range(40)]
    targets = {references[0].program for references in drawn}
    assert targets == {t.program for name in ("deduction", "abduction") for t in pools[name].tasks}
    assert all(references[1:] == list(pools["induction"].tasks) for references in drawn)
    # Without program buffers (induction trained alone) its own programs are the targets.
    alone = induction.proposer_references({"induction": pools["induction"]}, rng, 1)
    assert alone == list(pools["induction"].tasks)
    # Program-and-input types show their own buffer only.
    assert Deduction().proposer_references(pools, rng, 5) == list(pools["deduction"].tasks)


def test_task_types_read_their_options_and_seed_rows_themselves() -> None:
    selfplay = SelfPlayConfig(induction_inputs=3)
    assert get_task_type("induction", selfplay).n_inputs == 3
    assert isinstance(get_task_type("deduction", selfplay), Deduction)
    induction_row = Task("def f(a):\n    return a", inputs=("1",), outputs=("1",), message="id")
    assert Induction().accepts(induction_row) and not Induction().accepts(DOUBLE)
    assert Abduction().accepts(DOUBLE) and not Abduction().accepts(induction_row)
    assert {TASK_TYPES[name].seed_set for name in TASK_TYPES} == {"io", "induction"}


# Tasks a shortcut answer solves (left) and tasks it does not (right), per type.
SHORTCUT_CASES = {
    "deduction": (Task("def f(x):\n    return sorted(x)", "[1, 2]", "[1, 2]"), DOUBLE),
    "abduction": (Task("def f(x):\n    return abs(x)", "-4", "4"), DOUBLE),
    "induction": (
        Task("def f(x):\n    return 'done'", inputs=("1", "2", "3", "4"), outputs=("'done'",) * 4),
        Task("def f(x):\n    return x * 2", inputs=("1", "2", "3", "4"), outputs=("2", "4", "6", "8")),
    ),
}


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_a_shortcut_answer_solves_identity_like_and_constant_tasks_only(
    name: str, executor: Executor
) -> None:
    task_type = get_task_type(name)
    solvable, proof = SHORTCUT_CASES[name]
    assert task_type.shortcut_solved(executor, solvable).result() is True
    assert task_type.shortcut_solved(executor, proof).result() is False
    # The identity seed every buffer starts from is the shortcut task par excellence.
    assert task_type.shortcut_solved(executor, task_type.seed_tasks()[0]).result() is True


@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_reject_shortcut_tasks_makes_validation_refuse_them_and_only_them(
    name: str, executor: Executor
) -> None:
    solvable, proof = SHORTCUT_CASES[name]
    strict = get_task_type(name, SelfPlayConfig(reject_shortcut_tasks=True, induction_inputs=4))
    plain = get_task_type(name, SelfPlayConfig(induction_inputs=4))
    assert strict.reject_shortcut_tasks and not plain.reject_shortcut_tasks
    proposals = [
        Proposal(task.program, task.input, inputs=task.inputs, message="m") for task in (solvable, proof)
    ]
    strict_solvable, strict_proof = [f.result() for f in strict.validate_batch(executor, proposals, step=3)]
    plain_solvable, plain_proof = [f.result() for f in plain.validate_batch(executor, proposals, step=3)]
    assert not strict_solvable.valid and strict_solvable.reason == "shortcut"
    assert plain_solvable.valid
    assert strict_proof == plain_proof and strict_proof.valid and strict_proof.task.step == 3
    # An invalid proposal keeps its own reason, and an unparsed one its format reason.
    failing = Proposal("def f(x):\n    return 1 / x", "0", inputs=("0",), message="m")
    reason = strict.submit_validation(executor, failing).result().reason
    assert reason == plain.submit_validation(executor, failing).result().reason
    assert reason.startswith("only 0 valid" if name == "induction" else "error")
    assert (
        strict.submit_validation(executor, BadFormat("no program")).result().reason.startswith("bad format")
    )
