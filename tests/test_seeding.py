"""Seeding grows a task list from the identity task with a scripted fake model, and stops when it must."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator

import pytest

from azr.buffer import TaskBuffer
from azr.executor import Executor, ExecutorConfig
from azr.prompts import get_format
from azr.seeding import GenerationRequest, grow_seed_tasks, proposal_of, validate_seed_tasks
from azr.tasks import Deduction, Induction, Task

COMPLETION = get_format("completion")


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2, timeout_s=5.0)) as ex:
        yield ex


class FakeModel:
    """Answers every proposer prompt with the next scripted response, recording what it was asked."""

    def __init__(self, responses: Iterator[str]) -> None:
        self.responses = responses
        self.requests: list[GenerationRequest] = []
        self.prompts: list[str] = []

    def __call__(self, prompts: list[str], request: GenerationRequest) -> list[str]:
        self.requests.append(request)
        self.prompts.extend(prompts)
        return [next(self.responses) for _ in prompts]


def adders() -> Iterator[str]:
    """Valid, distinct proposals, each followed by an invalid and an unparseable one."""
    i = 0
    while True:
        i += 1
        yield f"x):\n    return x + {i}\nassert f(1) == 0"
        yield "x):\n    return x / 0\nassert f(1) == 0"
        yield "I am not code"


def test_grows_to_the_target_with_valid_distinct_tasks(executor: Executor) -> None:
    deduction = Deduction()
    model = FakeModel(adders())
    result = grow_seed_tasks(
        deduction,
        COMPLETION,
        executor,
        model,
        deduction.seed_tasks(),
        target=6,
        rng=random.Random(0),
        batch_size=4,
    )
    # Whole batches: the 4th batch of 4 takes the list from 5 tasks past the target to 7.
    assert result.reached and len(result.tasks) == 7
    assert result.tasks[0] == deduction.seed_tasks()[0]
    assert [task.output for task in result.tasks[1:]] == ["2", "3", "4", "5", "6", "7"]
    assert (result.proposals, result.valid, result.rounds) == (16, 6, 4)
    assert model.requests[0] == GenerationRequest(
        "deduction", "propose", COMPLETION.stop("deduction_propose")
    )
    assert all(prompt.endswith("def f(") for prompt in model.prompts)


def test_tasks_that_keep_refuses_count_as_valid_but_are_not_kept(executor: Executor) -> None:
    deduction = Deduction()
    result = grow_seed_tasks(
        deduction,
        COMPLETION,
        executor,
        FakeModel(adders()),
        deduction.seed_tasks(),
        target=4,
        rng=random.Random(0),
        batch_size=3,
        keep=lambda task: task.output not in ("2", "4"),
    )
    assert [task.output for task in result.tasks[1:]] == ["3", "5", "6"]
    assert result.valid == 5


def test_stops_after_the_attempt_budget_when_the_model_cannot_propose(executor: Executor) -> None:
    deduction = Deduction()
    model = FakeModel(iter(lambda: "nonsense", None))
    result = grow_seed_tasks(
        deduction,
        COMPLETION,
        executor,
        model,
        deduction.seed_tasks(),
        target=100,
        rng=random.Random(0),
        batch_size=8,
        max_proposals=20,
    )
    assert not result.reached
    assert (len(result.tasks), result.proposals, result.valid, result.rounds) == (1, 20, 0, 3)


def test_induction_seeding_writes_inputs_for_given_programs(executor: Executor) -> None:
    induction = Induction(n_inputs=4)
    programs = TaskBuffer(":memory:", "deduction")
    programs.add([Task("def f(x):\n    return x * 3", "1", "3")])
    # The prompt opens the test function's `# ` line: the message first, then the asserts.
    calls = ("\n".join(f"    assert f({k + j}) == 0" for j in range(4)) for k in range(100))
    lines = iter(f"Triples.\n{block}" for block in calls)
    result = grow_seed_tasks(
        induction,
        COMPLETION,
        executor,
        FakeModel(lines),
        induction.seed_tasks(),
        target=3,
        rng=random.Random(0),
        other_pools={"deduction": programs},
        references=1,
        batch_size=2,
    )
    assert result.reached
    assert result.tasks[1] == Task(
        programs.tasks[0].program,
        inputs=("0", "1", "2", "3"),
        outputs=("0", "3", "6", "9"),
        message="Triples.",
    )


def test_seed_tasks_are_revalidated_and_deduplicated(executor: Executor) -> None:
    deduction = Deduction()
    stale = Task("def f(a):\n    return a * 2", "2", "5")
    duplicate = Task("def f(a):\n    return a*2", "2", "4")
    broken = Task("def f(a):\n    return a.missing", "2", "?")
    assert proposal_of(stale).input == "2"
    assert validate_seed_tasks(deduction, executor, [stale, duplicate, broken]) == [
        Task(stale.program, "2", "4")
    ]


def test_generate_must_answer_every_prompt(executor: Executor) -> None:
    deduction = Deduction()
    with pytest.raises(ValueError, match="responses"):
        grow_seed_tasks(
            deduction,
            COMPLETION,
            executor,
            lambda prompts, request: [],
            deduction.seed_tasks(),
            5,
            random.Random(0),
        )


TORCH_FREE = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import azr.buffer, azr.parsing, azr.prompts, azr.rewards, azr.seeding, azr.tasks
from azr.prompts import get_format
from azr.tasks import get_task_type
fmt = get_format("completion")
task_type = get_task_type("deduction")
prompt = task_type.proposer_prompt(fmt, task_type.seed_tasks())
assert task_type.parse_proposal(fmt, prompt, "a):\\n    return a\\nassert f(1) == 1").input == "1"
assert azr.rewards.learnability_reward(0.5, azr.rewards.RewardConfig()) == 0.5
try:
    import azr.advantages
except ImportError:
    print("core ok without torch")
"""


def test_core_imports_and_works_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", TORCH_FREE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "core ok without torch"
