"""The evaluation runner, benchmark files, model path resolution and the `azr eval` command end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from azr.cli import app
from azr.engines import Completion, GenerationBackend, SamplingParams
from azr.evaluation.benchmarks import BenchmarkError, load_benchmark, parse_benchmark_file_option
from azr.evaluation.cli import resolve_model_path
from azr.evaluation.prompting import build_prompt
from azr.evaluation.runner import evaluate, pass_at_k
from azr.executor import Executor, ExecutorConfig
from azr.run_dir import COMPLETE_MARKER


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2)) as pool:
        yield pool


class _NoChatTokenizer:
    chat_template = None


class ScriptedBackend(GenerationBackend):
    """Answers each prompt from a script: a list of responses used in turn (one per sample)."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.tokenizer = _NoChatTokenizer()  # type: ignore[assignment]
        self.script = script
        self.served: dict[str, int] = {}
        self.params: list[SamplingParams] = []

    def generate(self, prompts: Sequence[str], params, *, seed: int | None = None) -> list[Completion]:
        self.params.extend(params if isinstance(params, list) else [params] * len(prompts))
        completions = []
        for prompt in prompts:
            turn = self.served.get(prompt, 0)
            self.served[prompt] = turn + 1
            text = self.script[prompt][turn % len(self.script[prompt])]
            completions.append(Completion(prompt, text, [1], [2, 3], [0.0, 0.0], "stop"))
        return completions

    def update_weights(self, model) -> None:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (10, 3, 10), (200, 17, 50)]
)
def test_pass_at_k_matches_the_binomial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_evaluate_scores_records_and_pass_at_k(executor):
    problems = load_benchmark("cruxeval-o", limit=4) + load_benchmark("math500", limit=4)
    script = {}
    for index, problem in enumerate(problems):
        right = f" {problem.gold_output}" if problem.kind == "output" else f"\\boxed{{{problem.reference}}}"
        # Problem 0 is always right, 1 never, the others right in one sample of three.
        wrong = " 'azr-wrong'" if problem.kind == "output" else "\\boxed{-1}"
        samples = (
            [[right], [wrong], [right, wrong, wrong]][min(index, 2)] if index < 4 else [right, wrong, wrong]
        )
        script[build_prompt(problem, "completion").text] = samples
    backend = ScriptedBackend(script)
    report = evaluate(
        backend, executor, ["cruxeval-o", "math500"], limit=4, samples=3, temperature=0.7, pass_k=2
    )
    expected_pass2 = (1 + 0 + 2 * (1 - math.comb(2, 2) / math.comb(3, 2))) / 4
    assert report.scores["cruxeval-o"] == pytest.approx(expected_pass2)
    assert report.pass_at["cruxeval-o"]["1"] == pytest.approx((1 + 0 + 1 / 3 + 1 / 3) / 4)
    assert report.config["problems"] == {"cruxeval-o": 4, "math500": 4}
    assert report.config["prompt_style"] == "completion"
    first = report.records[0]
    assert first["benchmark"] == "cruxeval-o" and first["correct"] is True and first["num_correct"] == 3
    assert [sample["correct"] for sample in report.records[2]["samples"]] == [True, False, False]
    assert all(params.stop == ("\n",) for params in backend.params[:12])
    assert {"generation_s", "execution_s", "math_grading_s", "grading_wait_s", "total_s"} <= set(
        report.timing
    )


def test_evaluate_rejects_greedy_pass_at_k_and_unknown_benchmarks(executor):
    backend = ScriptedBackend({})
    with pytest.raises(ValueError, match="temperature"):
        evaluate(backend, executor, ["cruxeval-o"], samples=4)
    with pytest.raises(BenchmarkError, match="Unknown benchmark 'livecodebench'"):
        evaluate(backend, executor, ["livecodebench"])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_benchmark_file_kinds_are_graded_in_the_sandbox(tmp_path, executor):
    rows = [
        {
            "id": "sum",
            "prompt": "Read two integers and print their sum.",
            "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12"}],
        },
        {
            "id": "double",
            "prompt": 'def double(x):\n    """Twice x."""\n',
            "entry_point": "double",
            "test": "def check(candidate):\n    assert candidate(2) == 4\n",
        },
        {
            "task_id": "plus/0",
            "prompt": "def half(x):\n",
            "entry_point": "half",
            "canonical_solution": "def half(x):\n    return x / 2\n",
            "base_input": [[1], [3]],
            "plus_input": [[0.5]],
        },
        {"id": "m", "problem": "What is 1/2 + 1/4?", "answer": "\\frac34"},
    ]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    problems = load_benchmark("mixed", {"mixed": path})
    assert [problem.kind for problem in problems] == ["stdio", "code", "code", "math"]
    good = [
        "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
        "```python\ndef double(x):\n    return 2 * x\n```",
        "```python\ndef half(x):\n    return x * 0.5\n```",
        "\\boxed{0.75}",
    ]
    bad = [
        "```python\nprint(3)\n```",
        "```python\ndef double(x):\n    return x\n```",
        "```python\ndef half(x):\n    return x // 2\n```",
        "\\boxed{1}",
    ]
    for responses, expected in ((good, 1.0), (bad, 0.0)):
        backend = ScriptedBackend(
            {build_prompt(p, "completion").text: [r] for p, r in zip(problems, responses, strict=True)}
        )
        report = evaluate(
            backend, executor, ["mixed"], prompt_style="completion", benchmark_files={"mixed": path}
        )
        assert report.scores["mixed"] == expected, report.records


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "not valid JSON"),
        ('{"id": 1, "prompt": "x"}\n', "cannot tell the problem kind"),
        ('{"id": 1, "prompt": "x", "tests": []}\n', "non-empty list"),
        ("\n", "holds no problems"),
    ],
)
def test_bad_benchmark_files_are_explained(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark("bad", {"bad": path})


def test_benchmark_file_option_parsing(tmp_path):
    assert parse_benchmark_file_option("lcb=/data/lcb.jsonl") == ("lcb", Path("/data/lcb.jsonl"))
    with pytest.raises(BenchmarkError, match="NAME=PATH"):
        parse_benchmark_file_option("lcb")
    with pytest.raises(BenchmarkError, match="no such file"):
        load_benchmark("lcb", {"lcb": tmp_path / "missing.jsonl"})


def test_resolve_model_path_picks_the_latest_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step, complete in ((2, True), (10, True), (11, False)):  # step 11: killed while being written
        folder = run / "checkpoints" / f"step_{step:06d}"
        (folder / "model").mkdir(parents=True)
        if complete:
            (folder / COMPLETE_MARKER).write_text("{}")
    assert resolve_model_path(str(run)) == str(run / "checkpoints" / "step_000010" / "model")
    assert resolve_model_path("embedded") == "embedded"
    with pytest.raises(ValueError, match="no such file"):
        resolve_model_path(str(tmp_path / "absent"))
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        resolve_model_path(str(tmp_path / "empty"))


def test_resolve_model_path_takes_one_checkpoint_folder_only_when_complete(tmp_path):
    kept = tmp_path / "kept-step35"
    (kept / "model").mkdir(parents=True)
    (kept / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="cut short"):
        resolve_model_path(str(kept))
    (kept / COMPLETE_MARKER).write_text("{}")
    assert resolve_model_path(str(kept)) == str(kept / "model")


def test_azr_eval_on_the_tiny_model_writes_the_results_file(tiny_model_dir, tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--benchmarks",
            "cruxeval-o,humaneval,math500",
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--workers",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "generation" in result.output
    results = json.loads(out.read_text())
    assert set(results) >= {"scores", "records", "config", "timing"}
    assert set(results["scores"]) == {"cruxeval-o", "humaneval", "math500"}
    assert all(0.0 <= value <= 1.0 for value in results["scores"].values())
    assert len(results["records"]) == 6
    for record in results["records"]:
        assert isinstance(record["benchmark"], str) and isinstance(record["id"], str)
        assert isinstance(record["response"], str) and isinstance(record["correct"], bool)
        assert record["answer"] is None or isinstance(record["answer"], str)
    assert results["config"]["limit"] == 2 and results["config"]["temperature"] == 0.0
    assert results["config"]["model"] == str(tiny_model_dir)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--benchmarks", "nope"], "Unknown benchmark 'nope'"),
        (["--benchmarks", "math500", "--model", "/no/such/model"], "no such file or directory"),
        (["--benchmarks", "x", "--benchmark-file", "x"], "NAME=PATH"),
    ],
)
def test_azr_eval_explains_bad_arguments(arguments, message):
    result = CliRunner().invoke(app, ["eval", *arguments])
    assert result.exit_code == 2
    assert message in result.output
