"""The held-out probe of self-play tasks: its shipped files, their disjointness, the benchmarks that ask
it through `azr eval`, the guard that keeps it out of training, and the build script's split."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from azr.buffer import task_key
from azr.engines import Completion, GenerationBackend
from azr.evaluation.benchmarks import expand_aliases, load_benchmark
from azr.evaluation.compare import compare_records, load_records
from azr.evaluation.graders import submit_grade
from azr.evaluation.prompting import build_prompt, extract_answer
from azr.evaluation.runner import evaluate
from azr.executor import Executor, ExecutorConfig
from azr.parsing import program_key
from azr.probe import (
    ALIAS,
    PROBE_BENCHMARKS,
    PROBE_TYPES,
    PROMPT_FORMAT,
    PROMPT_VERSION,
    ProbeLeakError,
    check_no_probe_tasks,
    in_probe,
    load_probe,
    probe_path,
    provenance,
    shortcut_solvable_ids,
    train_split_path,
    with_shortcut_proof_subsets,
    without_probe_tasks,
)
from azr.prompts import get_format
from azr.seeding import proposal_of
from azr.tasks import Induction, Task, get_task_type, load_seed_tasks, shipped_seed_path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "probe-base.json"
IO_KEYS = {"id", "snippet", "input", "output", "examples"}
INDUCTION_KEYS = {"id", "snippet", "inputs", "outputs", "message", "examples"}


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2)) as pool:
        yield pool


@pytest.fixture(scope="module")
def probe() -> dict[str, list]:
    return {name: load_probe(name) for name in PROBE_TYPES}


@pytest.fixture(scope="module")
def train_split() -> list[Task]:
    return load_seed_tasks(train_split_path())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _seed_tasks() -> list[Task]:
    shipped = [task for kind in ("io", "induction") for task in load_seed_tasks(shipped_seed_path(kind))]
    identity = [task for name in PROBE_TYPES for task in get_task_type(name).seed_tasks()]
    return shipped + identity


# the shipped files


@pytest.mark.parametrize("task_type", PROBE_TYPES)
def test_every_probe_row_has_the_schema_of_its_type(task_type):
    rows = _rows(probe_path(task_type))
    built = provenance()
    assert len(rows) == built["probe"][task_type] >= 200
    assert len({row["id"] for row in rows}) == len(rows)
    keys = INDUCTION_KEYS if task_type == "induction" else IO_KEYS
    for row in rows:
        assert set(row) == keys, row["id"]
        assert isinstance(row["snippet"], str) and "def f(" in row["snippet"]
        if task_type == "induction":
            assert len(row["inputs"]) == len(row["outputs"]) == built["induction_inputs"]
            assert all(isinstance(value, str) for value in row["inputs"] + row["outputs"])
            assert row["message"].strip()
        else:
            assert isinstance(row["input"], str) and isinstance(row["output"], str) and row["input"]
        assert len(row["examples"]) <= built["solver_examples"]
        for example in row["examples"]:
            assert set(example) == keys - {"id", "examples"}


def test_provenance_records_how_the_probe_was_built():
    built = provenance()
    assert built["model"] == "qwen2.5-coder-0.5b" and built["backend"] == "transformers-int8"
    assert (built["prompt_format"], built["prompt_version"]) == (PROMPT_FORMAT, PROMPT_VERSION)
    assert {"command", "built", "seed", "sampling", "streams"} <= set(built)
    for stream in built["streams"].values():
        assert 0 < stream["valid"] <= stream["proposals"]
        assert stream["valid_rate"] == pytest.approx(stream["valid"] / stream["proposals"])


def test_the_training_split_loads_as_a_seed_file(train_split):
    built = provenance()["train"]
    io = [task for task in train_split if not task.inputs]
    induction = [task for task in train_split if task.inputs]
    assert (len(io), len(induction)) == (built["io"], built["induction"])
    assert len({task_key(task) for task in io}) == len(io)
    assert all(get_task_type("deduction").accepts(task) for task in io)
    assert all(get_task_type("induction").accepts(task) for task in induction)


def _revalidated(task_type: str, executor: Executor, tasks: Sequence[Task]) -> list[Task | None]:
    """The tasks as the sandbox validates their proposals now, with the build's number of induction inputs."""
    validator = (
        Induction(provenance()["induction_inputs"]) if task_type == "induction" else get_task_type(task_type)
    )
    futures = validator.validate_batch(executor, [proposal_of(task) for task in tasks])
    return [future.result().task for future in futures]


@pytest.mark.parametrize("task_type", PROBE_TYPES)
def test_each_answer_is_what_the_sandbox_computes(task_type, probe, executor):
    tasks = [item.task for item in probe[task_type]]
    for task, again in zip(tasks, _revalidated(task_type, executor, tasks), strict=True):
        assert again is not None, task.program
        assert (again.output, again.inputs, again.outputs) == (task.output, task.inputs, task.outputs)


def test_a_sample_of_the_training_split_is_what_the_sandbox_computes(train_split, executor):
    sample = random.Random(0).sample(train_split, 60)
    for name in ("deduction", "induction"):
        tasks = [task for task in sample if get_task_type(name).accepts(task)]
        for task, again in zip(tasks, _revalidated(name, executor, tasks), strict=True):
            assert again is not None and (again.output, again.outputs) == (task.output, task.outputs)


def test_the_probe_shares_no_program_with_a_training_seed_or_the_training_split(probe, train_split):
    probe_tasks = [item.task for items in probe.values() for item in items]
    programs = {program_key(task.program) for task in probe_tasks}
    keys = {task_key(task) for task in probe_tasks}
    for training in (_seed_tasks(), train_split):
        assert not programs & {program_key(task.program) for task in training}
        assert not keys & {task_key(task) for task in training}


def test_worked_examples_come_from_the_training_split(probe, train_split):
    training = {task_key(task) for task in train_split}
    shown = [example for items in probe.values() for item in items for example in item.examples]
    assert shown and all(task_key(example) in training for example in shown)
    assert not any(in_probe(example) for example in shown)


def test_within_a_type_no_program_repeats(probe):
    for items in probe.values():
        assert len({program_key(item.task.program) for item in items}) == len(items)


# keeping the probe out of training


def test_probe_tasks_are_refused_for_training(probe, train_split):
    task = probe["abduction"][0].task
    relaid = Task(f"# a comment\n{task.program}\n", "0", "0")  # same program, another input
    assert in_probe(task) and in_probe(relaid)
    with pytest.raises(ProbeLeakError, match="my seed file: 2 task"):
        check_no_probe_tasks([train_split[0], task, relaid], "my seed file")
    check_no_probe_tasks(train_split, "the training split")
    assert without_probe_tasks([task, train_split[0], relaid]) == [train_split[0]]


# azr eval


def test_the_benchmarks_load_every_probe_task(probe):
    for name, task_type in PROBE_BENCHMARKS.items():
        problems = load_benchmark(name)
        assert [p.id for p in problems] == [item.id for item in probe[task_type]]
        assert {(p.benchmark, p.kind, p.task_type) for p in problems} == {(name, "selfplay", task_type)}
        assert len(load_benchmark(name, limit=40)) == 40


def test_the_alias_stands_for_the_three_probes():
    assert expand_aliases([ALIAS, "cruxeval-o", "probe-abduction"]) == [*PROBE_BENCHMARKS, "cruxeval-o"]
    problems = load_benchmark(ALIAS, limit=2)
    assert [p.benchmark for p in problems] == [name for name in PROBE_BENCHMARKS for _ in range(2)]


@pytest.mark.parametrize("task_type", PROBE_TYPES)
def test_prompts_are_the_selfplay_solver_prompts_in_every_style(task_type, probe):
    item = probe[task_type][0]
    problem = load_benchmark(f"probe-{task_type}", limit=1)[0]
    fmt = get_format(PROMPT_FORMAT, PROMPT_VERSION)
    solver = get_task_type(task_type)
    expected = solver.solver_prompt(fmt, item.task, item.examples)
    for style in ("chat", "completion"):
        prompt = build_prompt(problem, style)
        assert (prompt.text, prompt.chat) == (expected, False)
        assert prompt.stop == tuple(solver.stop(fmt, "solve"))


def _right_and_wrong(task_type: str, task: Task) -> tuple[str, str]:
    """Responses as the model writes them after the solver prompt (the format's prefix is in the prompt)."""
    if task_type == "deduction":
        return f" {task.output}", " ('azr', 'wrong')"
    if task_type == "abduction":  # some programs return a constant: only an input that raises is wrong
        return f"{task.input})", "1 / 0)"
    body = task.program.removeprefix("def f(")
    return body, body.split("\n", 1)[0] + "\n    return ('azr', 'wrong')"


@pytest.mark.parametrize("task_type", PROBE_TYPES)
def test_answers_are_judged_by_the_task_types_own_check(task_type, executor):
    problems = load_benchmark(f"probe-{task_type}", limit=5)
    for problem in problems:
        right, wrong = _right_and_wrong(task_type, problem.task)
        for response, correct in ((right, True), (wrong, False)):
            answer = extract_answer(problem, response, "chat")
            grade = submit_grade(problem, answer, executor, None).result()  # type: ignore[arg-type]
            assert grade.correct is correct, (problem.id, response, grade)


class _Tokenizer:
    chat_template = "{{ messages }}"  # a chat model: the probe must still be asked in completion style


class _GoldBackend(GenerationBackend):
    """Answers every probe prompt with the gold answer, except those in `wrong`."""

    def __init__(self, problems, wrong: set[str]) -> None:
        self.tokenizer = _Tokenizer()  # type: ignore[assignment]
        self.answers = {
            build_prompt(p, "chat").text: _right_and_wrong(p.task_type, p.task)[p.id in wrong]
            for p in problems
        }

    def generate(self, prompts, params, *, seed=None) -> list[Completion]:
        return [Completion(p, self.answers[p], [1], [2], [0.0], "stop") for p in prompts]

    def update_weights(self, model) -> None:
        raise NotImplementedError


def test_evaluate_scores_each_probe_under_its_own_name(executor):
    problems = load_benchmark(ALIAS, limit=4)
    wrong = {problems[0].id, problems[5].id}
    report = evaluate(_GoldBackend(problems, wrong), executor, [ALIAS], limit=4)
    assert report.scores == {"probe-deduction": 0.75, "probe-abduction": 0.75, "probe-induction": 1.0}
    assert report.config["benchmarks"] == list(PROBE_BENCHMARKS)
    assert report.config["max_new_tokens_used"] == dict.fromkeys(PROBE_BENCHMARKS, 96)


def test_in_training_validation_settings_run_the_alias_on_a_real_backend(tiny_backend, executor):
    """`Trainer.validate` calls `evaluate` with the config's names, budget and style: the alias works
    there too, with a chat tokenizer and the completion style alike."""
    for style in ("completion", "auto"):
        report = evaluate(tiny_backend, executor, [ALIAS], limit=2, max_new_tokens=4, prompt_style=style)
        assert set(report.scores) == set(PROBE_BENCHMARKS)
        assert all(record["prompt"].endswith(("==", "f(", "def f(")) for record in report.records)


def test_the_base_results_file_covers_the_whole_probe_and_compares(probe):
    results = json.loads(RESULTS.read_text("utf-8"))
    assert set(results["scores"]) == set(PROBE_BENCHMARKS)
    assert results["config"]["problems"] == {f"probe-{name}": len(items) for name, items in probe.items()}
    assert results["config"]["temperature"] == 0.0 and results["config"]["backend"] == "transformers-int8"
    for name in ("probe-deduction", "probe-abduction"):
        assert 0.15 <= results["scores"][name] <= 0.60
    records = load_records(RESULTS)
    diffs = compare_records(records, records)
    assert [d.benchmark for d in diffs] == list(PROBE_BENCHMARKS)
    assert all(d.gained == d.lost == 0 for d in diffs)


def test_shortcut_solvable_tasks_are_found_by_each_task_types_own_check(executor):
    from azr.probe import ProbeTask, find_shortcut_solvable

    def io(task_id: str, program: str, input_: str, output: str) -> ProbeTask:
        return ProbeTask(task_id, task_id.split("-")[0], Task(program, input_, output))

    def induction(task_id: str, program: str, outputs: tuple[str, ...]) -> ProbeTask:
        inputs = ("1", "'b'", "[]", "4")
        return ProbeTask(task_id, "induction", Task(program, inputs=inputs, outputs=outputs, message="m"))

    tasks = [
        io("abduction-000", "def f(a):\n    return 'x'", "5", "'x'"),  # f('x') is 'x'
        io("abduction-001", "def f(a):\n    return a * 2", "5", "10"),  # f(10) is not 10
        io("deduction-000", "def f(s):\n    return s.upper()", "'AB'", "'AB'"),  # gives its input back
        io("deduction-001", "def f(s):\n    return len(s)", "'ab'", "2"),
        induction("induction-000", "def f(a):\n    print(a)", ("None",) * 4),  # a constant
        induction("induction-001", "def f(a):\n    return a", ("1", "'b'", "[]", "4")),  # the identity
        induction("induction-002", "def f(a):\n    return [a]", ("[1]", "['b']", "[[]]", "[4]")),
    ]
    assert find_shortcut_solvable(executor, tasks) == {
        "deduction": ["deduction-000"],
        "abduction": ["abduction-000"],
        "induction": ["induction-000", "induction-001"],
    }


def test_the_shipped_shortcut_list_is_what_the_sandbox_judges(probe, executor, tmp_path):
    from azr.probe import SHORTCUTS, find_shortcut_solvable, probe_dir, write_shortcuts

    judged = find_shortcut_solvable(executor, [task for name in PROBE_TYPES for task in probe[name]])
    assert {name: frozenset(ids) for name, ids in judged.items()} == shortcut_solvable_ids()
    # Most of the base model's abduction tasks are constant or identity-like programs: the list is the
    # reason the probe is also read without them.
    assert len(judged["abduction"]) > len(probe["abduction"]) / 2 > len(judged["deduction"])
    # The build writes the file it ships: the same document from a copy of the probe.
    for name in PROBE_TYPES:
        (tmp_path / f"{name}.jsonl").write_bytes(probe_path(name).read_bytes())
    write_shortcuts(executor, tmp_path)
    assert json.loads((tmp_path / SHORTCUTS).read_text()) == json.loads((probe_dir() / SHORTCUTS).read_text())


def test_shortcut_proof_subsets_follow_their_benchmark_and_leave_others_alone():
    solvable = shortcut_solvable_ids()
    ids = [task.id for task in load_probe("abduction")[:40]]
    records = [{"benchmark": "probe-abduction", "id": i, "correct": True, "answer": "1"} for i in ids]
    other = {"benchmark": "cruxeval-o", "id": "0", "correct": False, "answer": "2"}
    out = with_shortcut_proof_subsets([*records, other])
    proof = [i for i in ids if i not in solvable["abduction"]]
    assert 0 < len(proof) < len(ids)
    assert out[: len(ids)] == records
    assert [r["id"] for r in out[len(ids) : len(ids) + len(proof)]] == proof
    assert {r["benchmark"] for r in out[len(ids) : len(ids) + len(proof)]} == {
        "probe-abduction shortcut-proof"
    }
    assert out[-1] == other


def test_compare_prints_the_shortcut_proof_rows_of_the_probe():
    from typer.testing import CliRunner

    from azr.cli import app

    result = CliRunner().invoke(app, ["compare", str(RESULTS), str(RESULTS)])
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1:]
        for line in result.output.splitlines()
        if len(cells := [cell.strip() for cell in line.strip("│").split("│")]) == 8
    }
    solvable = shortcut_solvable_ids()
    for name, task_type in PROBE_BENCHMARKS.items():
        assert rows[name][0] == "250"
        assert rows[f"{name} shortcut-proof"][0] == str(250 - len(solvable[task_type]))


# the build script's pure steps


def test_cleaning_drops_seed_programs_and_repeats(benchmark_script):
    build = benchmark_script("build_probe")
    seed = Task("def f(a):\n    return a", "1", "1")
    tasks = [
        Task("def f(x):\n    return x + 1", "1", "2"),
        Task("def f(x):\n    # the same program\n    return x + 1", "5", "6"),
        Task("def f(a):\n    return a", "2", "2"),
        Task("def f(x):\n    return x * 2", "1", "2"),
    ]
    cleaned = build.clean(tasks, frozenset({program_key(seed.program)}))
    assert [task.program for task in cleaned.tasks] == [tasks[0].program, tasks[3].program]
    assert (cleaned.seed_copies, cleaned.duplicates) == (1, 1)


def test_the_split_puts_each_program_on_one_side(benchmark_script):
    build = benchmark_script("build_probe")
    programs = [f"def f(x):\n    return x + {n}" for n in range(30)]
    by_type = {
        "deduction": [Task(program, "1", "0") for program in programs[:20]],
        "abduction": [Task(program, "2", "0") for program in programs[10:]],
    }
    probe, train = build.split_by_program(by_type, probe_size=6, seed=0)
    assert all(len(tasks) == 6 for tasks in probe.values())
    sides = [{program_key(t.program) for tasks in side.values() for t in tasks} for side in (probe, train)]
    assert not sides[0] & sides[1]
    for name, tasks in by_type.items():  # a task is left out only when its program is in a full probe
        placed = {task_key(task) for task in probe[name] + train[name]}
        left_out = [task for task in tasks if task_key(task) not in placed]
        assert all(program_key(task.program) in sides[0] for task in left_out)
    assert build.split_by_program(by_type, probe_size=6, seed=0) == (probe, train)
