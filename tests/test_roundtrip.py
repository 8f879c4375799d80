"""Real seed programs through prompt → gold answer written as model output → parse → judge, both formats.

Proposer side: the task itself, written as the proposer would, must parse and validate back into the same
task. Solver side: the gold answer, written as the solver would, must parse and be judged correct.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from azr.executor import Executor, ExecutorConfig
from azr.parsing import BadFormat
from azr.prompts import get_format
from azr.seeding import validate_seed_tasks
from azr.tasks import TASK_TYPES, Task, get_task_type, load_seed_tasks
from azr.tasks.seeds import shipped_seed_path

SAMPLE = 40


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2, timeout_s=5.0)) as ex:
        yield ex


@pytest.fixture(scope="module")
def seed_tasks(executor: Executor) -> dict[str, list[Task]]:
    """A fixed sample of the shipped programs, re-validated in our sandbox (outputs recomputed)."""
    rng = random.Random(0)
    io = rng.sample(load_seed_tasks(shipped_seed_path("io")), SAMPLE)
    induction = rng.sample(load_seed_tasks(shipped_seed_path("induction")), SAMPLE)
    io = validate_seed_tasks(get_task_type("deduction"), executor, io)
    induction = validate_seed_tasks(get_task_type("induction"), executor, induction)
    assert len(io) >= SAMPLE * 3 // 4 and len(induction) >= SAMPLE // 2
    return {"deduction": io, "abduction": io, "induction": induction}


def r1(answer: str) -> str:
    """An r1 response (the prompt already opened `<think>`)."""
    return f" Let me work it out step by step.\n</think>\n<answer>\n{answer}\n</answer>"


def gold_proposal(format_name: str, name: str, task: Task) -> str:
    if format_name == "r1":
        if name == "induction":
            inputs = "".join(f"```input\n{inp}\n```\n" for inp in task.inputs)
            return r1(f"{inputs}```message\n{task.message}\n```")
        return r1(f"```python\n{task.program}\n```\n```input\n{task.input}\n```")
    if name == "induction":
        # The prompt already opened the test function's first line, `# `: the message, then the asserts.
        lines = [f"    assert f({inp}) == {out}" for inp, out in task.pairs]
        return " ".join(task.message.split()) + "\n" + "\n".join(lines)
    return task.program.removeprefix("def f(") + f"\nassert f({task.input}) == {task.output}\n"


def gold_answer(format_name: str, name: str, task: Task) -> str:
    answer = {"deduction": task.output, "abduction": task.input, "induction": task.program}[name]
    if format_name == "r1":
        block = {"deduction": "output", "abduction": "input", "induction": "python"}[name]
        return r1(f"```{block}\n{answer}\n```")
    return {
        "deduction": f" {task.output}\n",
        "abduction": f"{task.input})\n",
        "induction": task.program.removeprefix("def f("),
    }[name]


def writable(format_name: str, name: str, task: Task, role: str) -> bool:
    """Whether the gold answer can be written in the format at all. The completion format primes programs
    with `def f(`, so a program that starts otherwise (imports, helpers first) cannot continue that prompt;
    a few shipped messages are empty or contain `<answer>` or fences, which no proposal can carry."""
    if name == "induction" and role == "propose" and not task.message.strip():
        return False
    writes_program = (role == "propose" and name != "induction") or (role == "solve" and name == "induction")
    single_line_inputs = all("\n" not in inp for inp in (task.inputs or (task.input,)))
    if format_name == "completion":
        return single_line_inputs and (not writes_program or task.program.startswith("def f("))
    return "<answer>" not in task.message and "```" not in task.message


@pytest.mark.parametrize("format_name", ["r1", "completion"])
@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_gold_proposals_validate_back_into_the_task(
    format_name: str, name: str, executor: Executor, seed_tasks: dict[str, list[Task]]
) -> None:
    fmt, task_type = get_format(format_name), get_task_type(name)
    tasks = [task for task in seed_tasks[name] if writable(format_name, name, task, "propose")]
    assert len(tasks) >= 15
    prompts = [task_type.proposer_prompt(fmt, [task, *seed_tasks[name][:2]]) for task in tasks]
    proposals = [
        task_type.parse_proposal(fmt, prompt, gold_proposal(format_name, name, task))
        for prompt, task in zip(prompts, tasks, strict=True)
    ]
    assert not [p for p in proposals if isinstance(p, BadFormat)]
    validations = [future.result() for future in task_type.validate_batch(executor, proposals)]
    for task, validation in zip(tasks, validations, strict=True):
        assert validation.task is not None, validation.reason
        assert (validation.task.output, validation.task.outputs) == (task.output, task.outputs)


@pytest.mark.parametrize("format_name", ["r1", "completion"])
@pytest.mark.parametrize("name", list(TASK_TYPES))
def test_gold_answers_are_judged_correct(
    format_name: str, name: str, executor: Executor, seed_tasks: dict[str, list[Task]]
) -> None:
    fmt, task_type = get_format(format_name), get_task_type(name)
    tasks = [task for task in seed_tasks[name] if writable(format_name, name, task, "solve")]
    assert len(tasks) >= 15
    for task in tasks:
        assert task_type.solver_prompt(fmt, task, examples=tasks[:2])
    answers = [task_type.parse_answer(fmt, gold_answer(format_name, name, task)) for task in tasks]
    assert not [a for a in answers if isinstance(a, BadFormat)]
    verdicts = task_type.judge_batch(executor, tasks, answers)
    assert all(verdict is not None and verdict.result().correct for verdict in verdicts)
