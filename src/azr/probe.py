"""The held-out probe: self-play tasks written by the base model, for measuring what self-play learns.

A benchmark of the model's own task distribution, which nothing may train on. `benchmarks/build_probe.py`
had the base model propose tasks of every type as self-play does, validated each in the sandbox (the
answer is the sandbox's), removed duplicates and anything identical to a training seed, and split the
rest by program into the probe and a training split for the solver-only control:

    data/probe/{deduction,abduction,induction}.jsonl   the probe, a task a line with its solver example
    data/probe/train.jsonl                             the training split, in the seed-file format
    data/probe/provenance.json                         how it was built: model, backend, seed, counts
    data/probe/shortcuts.json                          the tasks an answer ignoring the program solves

No probe task shares a program (`program_key`: normalised, with its own names numbered) with the training
split, the shipped seed files or the identity seeds. `in_probe`, `without_probe_tasks` and
`check_no_probe_tasks` keep probe tasks out of training buffers.

The probe is asked with the self-play solver prompts of the completion format at a pinned template
version, so that results files made before and after training stay comparable when templates change;
each task's worked example was drawn once from the training split and is stored with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azr.parsing import BadFormat, program_key
from azr.tasks import Task, TaskType, get_task_type

if TYPE_CHECKING:
    from azr.executor import Executor, Verdict
    from azr.prompts import PromptFormat

PROBE_TYPES = ("deduction", "abduction", "induction")
BENCHMARK_PREFIX = "probe-"
PROBE_BENCHMARKS = {f"{BENCHMARK_PREFIX}{name}": name for name in PROBE_TYPES}
"""Benchmark name -> task type: `probe-deduction`, `probe-abduction`, `probe-induction`."""
ALIAS = "selfplay-probe"
"""The three probe benchmarks at once."""
PROMPT_FORMAT = "completion"
PROMPT_VERSION = "v3"
"""The template version the probe is asked in (the newest when it was built), recorded in its provenance."""
TRAIN_SPLIT = "train.jsonl"
PROVENANCE = "provenance.json"
SHORTCUTS = "shortcuts.json"
SHORTCUT_PROOF = "shortcut-proof"
"""What `with_shortcut_proof_subsets` appends to a probe benchmark's name for its subset."""


class ProbeLeakError(ValueError):
    """Tasks meant for training that share a program with the held-out probe."""


@dataclass(frozen=True)
class ProbeTask:
    """One probe task: its id (unique within its type), the task, and the solved examples its prompt shows."""

    id: str
    task_type: str
    task: Task
    examples: tuple[Task, ...] = ()


def probe_dir() -> Path:
    return Path(str(resources.files("azr").joinpath("data", "probe")))


def probe_path(task_type: str) -> Path:
    """The probe file of one task type."""
    if task_type not in PROBE_TYPES:
        raise ValueError(f"no probe of task type {task_type!r}; known: {', '.join(PROBE_TYPES)}")
    return probe_dir() / f"{task_type}.jsonl"


def train_split_path() -> Path:
    """The control's training split, a seed file for `selfplay.seed_file` / `azr.tasks.load_seed_tasks`."""
    return probe_dir() / TRAIN_SPLIT


def provenance() -> dict[str, Any]:
    """How the shipped probe was built: model, backend, seed, date, command, counts, valid rates."""
    return json.loads((probe_dir() / PROVENANCE).read_text("utf-8"))


def seed_row(task: Task) -> dict[str, Any]:
    """A task as a row of a seed file (`snippet` and `input`/`output`, or `inputs`/`outputs`/`message`)."""
    if task.inputs:
        return {
            "snippet": task.program,
            "inputs": list(task.inputs),
            "outputs": list(task.outputs),
            "message": task.message,
        }
    return {"snippet": task.program, "input": task.input, "output": task.output}


def task_of_row(row: dict[str, Any]) -> Task:
    """The task of a seed-file row (the inverse of `seed_row`)."""
    if "inputs" in row:
        return Task(
            row["snippet"], inputs=tuple(row["inputs"]), outputs=tuple(row["outputs"]), message=row["message"]
        )
    return Task(row["snippet"], row["input"], row["output"])


def probe_row(probe_task: ProbeTask) -> dict[str, Any]:
    """A probe task as one line of its probe file."""
    return {
        "id": probe_task.id,
        **seed_row(probe_task.task),
        "examples": [seed_row(example) for example in probe_task.examples],
    }


def load_probe(task_type: str, path: str | Path | None = None) -> list[ProbeTask]:
    """The probe tasks of one type, in file order (the shipped file unless `path` is given)."""
    path = Path(path) if path is not None else probe_path(task_type)
    tasks = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                tasks.append(
                    ProbeTask(
                        str(row["id"]),
                        task_type,
                        task_of_row(row),
                        tuple(task_of_row(example) for example in row["examples"]),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a probe row ({error})") from error
    return tasks


@cache
def probe_programs() -> frozenset[str]:
    """The program keys of every shipped probe task, all types together."""
    return frozenset(program_key(item.task.program) for name in PROBE_TYPES for item in load_probe(name))


def in_probe(task: Task) -> bool:
    """Whether `task` shares its program with a probe task (of any type): such a task must not be trained
    on, whatever its input, or the probe would no longer be held out."""
    return program_key(task.program) in probe_programs()


def without_probe_tasks(tasks: Iterable[Task]) -> list[Task]:
    """`tasks` without those that share a program with the probe (e.g. self-play proposals for a buffer)."""
    return [task for task in tasks if not in_probe(task)]


def check_no_probe_tasks(tasks: Iterable[Task], source: str) -> None:
    """Refuse training tasks (a seed file, a buffer) that share a program with the probe: raises
    `ProbeLeakError` naming `source`, how many tasks and the first such program."""
    leaked = [task for task in tasks if in_probe(task)]
    if leaked:
        first = leaked[0].program.splitlines()[0] if leaked[0].program else ""
        raise ProbeLeakError(
            f"{source}: {len(leaked)} task(s) share a program with the held-out probe (first: {first!r}); "
            "probe tasks must never be trained on"
        )


@cache
def probe_format() -> PromptFormat:
    from azr.prompts import get_format

    return get_format(PROMPT_FORMAT, PROMPT_VERSION)


@cache
def probe_task_type(task_type: str) -> TaskType:
    return get_task_type(task_type)


def solver_prompt(task_type: str, task: Task, examples: Sequence[Task]) -> str:
    """The self-play solver prompt of `task`, showing `examples` first."""
    return probe_task_type(task_type).solver_prompt(probe_format(), task, examples)


def solver_stop(task_type: str) -> tuple[str, ...]:
    return tuple(probe_task_type(task_type).stop(probe_format(), "solve"))


def parse_answer(task_type: str, response: str) -> str | None:
    """The answer in a solver response as self-play reads it, or None when it cannot be read."""
    answer = probe_task_type(task_type).parse_answer(probe_format(), response)
    return None if isinstance(answer, BadFormat) else answer


def judge(executor: Executor, task_type: str, task: Task, answer: str) -> Future[Verdict]:
    """The task type's own check in the sandbox: deduction compares outputs, abduction runs f on the
    answer, induction runs the answered program on the held-out pairs."""
    return probe_task_type(task_type).judge(executor, task, answer)


def find_shortcut_solvable(executor: Executor, tasks: Iterable[ProbeTask]) -> dict[str, list[str]]:
    """Per probe type, the ids of `tasks` that one of the type's `shortcut_answers` solves (an answer
    that never reads the program), judged in the sandbox by the type's own check; in task order."""
    tasks = list(tasks)
    pending = [probe_task_type(task.task_type).shortcut_solved(executor, task.task) for task in tasks]
    solvable: dict[str, list[str]] = {name: [] for name in PROBE_TYPES}
    for task, solved in zip(tasks, pending, strict=True):
        if solved.result():
            solvable[task.task_type].append(task.id)
    return solvable


def write_shortcuts(executor: Executor, out_dir: Path) -> dict[str, list[str]]:
    """Judge the probe in `out_dir` and write its `shortcuts.json` there; returns what it wrote."""
    tasks = [task for name in PROBE_TYPES for task in load_probe(name, out_dir / f"{name}.jsonl")]
    solvable = find_shortcut_solvable(executor, tasks)
    document = {
        "what": "ids of the probe tasks that an answer never reading the program solves "
        "(azr.tasks TaskType.shortcut_answers), judged in the sandbox",
        "solvable": solvable,
    }
    (out_dir / SHORTCUTS).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return solvable


@cache
def shortcut_solvable_ids() -> dict[str, frozenset[str]]:
    """Per probe type, the ids of the shipped probe tasks a shortcut answer solves (`shortcuts.json`,
    written by `benchmarks/build_probe.py`; a test checks it against the sandbox)."""
    document = json.loads((probe_dir() / SHORTCUTS).read_text("utf-8"))
    return {name: frozenset(document["solvable"][name]) for name in PROBE_TYPES}


def with_shortcut_proof_subsets(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`azr eval` records with, after each probe benchmark's own, copies of its records on the tasks no
    shortcut answer solves, under the benchmark `probe-<type> shortcut-proof`: a rise there is not a
    shortcut. Records of other benchmarks pass through unchanged."""
    by_benchmark: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_benchmark.setdefault(record["benchmark"], []).append(record)
    out: list[dict[str, Any]] = []
    for benchmark, own in by_benchmark.items():
        out += own
        task_type = PROBE_BENCHMARKS.get(benchmark)
        if task_type is not None:
            solvable = shortcut_solvable_ids()[task_type]
            out += [
                {**record, "benchmark": f"{benchmark} {SHORTCUT_PROOF}"}
                for record in own
                if record["id"] not in solvable
            ]
    return out


def shortcut_proof_scores(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The fraction right of each probe benchmark's shortcut-proof subset in `records` (`azr eval`
    records, one per problem), keyed `probe-<type> shortcut-proof`; nothing for other benchmarks."""
    right: dict[str, list[bool]] = {}
    for record in with_shortcut_proof_subsets(records):
        if record["benchmark"].endswith(f" {SHORTCUT_PROOF}"):
            right.setdefault(record["benchmark"], []).append(bool(record["correct"]))
    return {name: sum(verdicts) / len(verdicts) for name, verdicts in right.items()}
