"""Running a model on benchmarks: `evaluate` prompts the backend, grades every answer and scores the sets.

`evaluate` takes a generation backend and an executor that the caller owns and loads no model, so the
trainer can call it for in-training validation with its own backend (and a faster backend speeds both up).
Grading overlaps generation: each benchmark's answers are submitted to the sandbox (or math-verify) as soon
as they are generated, and all verdicts are gathered at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.engines import GenerationBackend, SamplingParams, chat_prompt
from azr.evaluation.benchmarks import Problem, expand_aliases, load_benchmark
from azr.evaluation.graders import Grade, submit_grade
from azr.evaluation.math_grading import MathGrader
from azr.evaluation.prompting import (
    DEFAULT_MAX_NEW_TOKENS,
    PromptStyle,
    build_prompt,
    extract_answer,
    resolve_style,
)
from azr.executor import Executor


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from `n` samples of which `c` are correct: 1 - C(n-c, k) / C(n, k).

    Computed as a product of ratios, never forming the (huge) binomial coefficients.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


@dataclass
class EvalReport:
    """Scores per benchmark, one record per problem, the exact settings, and where the time went."""

    scores: dict[str, float]
    records: list[dict[str, Any]]
    config: dict[str, Any]
    timing: dict[str, float]
    pass_at: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The results-file object: `scores`, `records`, `config`, `timing` and `pass_at_k`."""
        return {
            "scores": self.scores,
            "pass_at_k": self.pass_at,
            "timing": self.timing,
            "config": self.config,
            "records": self.records,
        }


@dataclass
class _Submitted:
    """One problem whose samples are generated and whose grades are pending."""

    problem: Problem
    prompt: str
    responses: list[str]
    answers: list[str | None]
    finish_reasons: list[str]
    grades: list[Future[Grade]]


def _sampling_params(
    problem: Problem, style: PromptStyle, stop: tuple[str, ...], settings: dict[str, Any]
) -> SamplingParams:
    budget = settings["max_new_tokens"] or DEFAULT_MAX_NEW_TOKENS[problem.kind][style]
    return SamplingParams(
        temperature=settings["temperature"], top_p=settings["top_p"], max_new_tokens=budget, stop=stop
    )


def _generate_and_submit(
    problems: list[Problem],
    backend: GenerationBackend,
    executor: Executor,
    math_grader: MathGrader,
    style: PromptStyle,
    settings: dict[str, Any],
    seed: int,
) -> tuple[list[_Submitted], float, int]:
    """Generate `samples` responses per problem and start grading them.

    Returns the submitted problems, the generation wall time and the number of generated tokens.
    """
    samples = settings["samples"]
    prompts, params = [], []
    for problem in problems:
        prompt = build_prompt(problem, style)
        text = chat_prompt(backend.tokenizer, prompt.text) if prompt.chat else prompt.text
        prompts.append(text)
        params.append(_sampling_params(problem, style, prompt.stop, settings))
    started = time.monotonic()
    completions = backend.generate(
        [text for text in prompts for _ in range(samples)],
        [param for param in params for _ in range(samples)],
        seed=seed,
    )
    generation_s = time.monotonic() - started
    submitted = []
    for index, problem in enumerate(problems):
        own = completions[index * samples : (index + 1) * samples]
        responses = [completion.text for completion in own]
        answers = [extract_answer(problem, response, style) for response in responses]
        submitted.append(
            _Submitted(
                problem=problem,
                prompt=prompts[index],
                responses=responses,
                answers=answers,
                finish_reasons=[completion.finish_reason for completion in own],
                grades=[submit_grade(problem, answer, executor, math_grader) for answer in answers],
            )
        )
    return submitted, generation_s, sum(len(completion.response_ids) for completion in completions)


def _record(item: _Submitted, grades: list[Grade], pass_ks: Sequence[int]) -> dict[str, Any]:
    first = grades[0]
    record: dict[str, Any] = {
        "benchmark": item.problem.benchmark,
        "id": item.problem.id,
        "response": item.responses[0],
        "answer": item.answers[0],
        "correct": first.correct,
        "status": first.status,
        "error": first.error,
        "finish_reason": item.finish_reasons[0],
        "reference": item.problem.reference,
        "prompt": item.prompt,
        **first.details,
    }
    if len(grades) > 1:
        correct = sum(grade.correct for grade in grades)
        record["num_correct"] = correct
        record["pass_at_k"] = {str(k): pass_at_k(len(grades), correct, k) for k in pass_ks}
        record["samples"] = [
            {"response": response, "answer": answer, "correct": grade.correct, "status": grade.status}
            for response, answer, grade in zip(item.responses, item.answers, grades, strict=True)
        ]
    return record


def evaluate(
    backend: GenerationBackend,
    executor: Executor,
    benchmarks: Sequence[str] = ("cruxeval-o", "cruxeval-i"),
    *,
    limit: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    prompt_style: str = "auto",
    seed: int = 0,
    pass_k: int | None = None,
    benchmark_files: dict[str, Path] | None = None,
    math_grader: MathGrader | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run `backend` on `benchmarks` (the first `limit` problems of each) and grade every answer. An alias
    (`selfplay-probe`) stands for the benchmarks it names, each scored on its own.

    Greedy pass@1 by default. With `samples` > 1 (which needs `temperature` > 0), each problem gets that
    many samples and the score is the unbiased pass@`pass_k` (default: `samples`); pass@1 is reported too.
    `max_new_tokens` None uses a per-kind default; `prompt_style` is `auto`, `chat` or `completion` (see
    `azr.evaluation.prompting`). A `math_grader` is started (and stopped) here unless one is passed in.
    `progress`, when given, receives a line of text after each benchmark's generation.
    Raises `BenchmarkError` for unknown benchmarks or bad files, `ValueError` for bad settings.
    """
    pass_k = _checked_pass_k(samples, temperature, pass_k, max_new_tokens)
    benchmarks = expand_aliases(benchmarks)
    style = resolve_style(prompt_style, getattr(backend.tokenizer, "chat_template", None) is not None)
    problem_sets = {name: load_benchmark(name, benchmark_files, limit) for name in benchmarks}
    settings = {
        "samples": samples,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
    }
    started = time.monotonic()
    own_grader = math_grader is None and any(p.kind == "math" for ps in problem_sets.values() for p in ps)
    grader = MathGrader() if own_grader else math_grader
    generation_s: dict[str, float] = {}
    tokens = 0
    try:
        pending: dict[str, list[_Submitted]] = {}
        for offset, (name, problems) in enumerate(problem_sets.items()):
            pending[name], generation_s[name], generated = _generate_and_submit(
                problems,
                backend,
                executor,
                grader,
                style,
                settings,
                seed + offset,  # type: ignore[arg-type]
            )
            tokens += generated
            if progress is not None:
                progress(f"{name}: {len(problems) * samples} responses in {generation_s[name]:.1f} s")
        generation_done = time.monotonic()
        graded = _collect_grades(pending, samples, pass_k)
        finished = time.monotonic()
    finally:
        if own_grader and grader is not None:
            grader.close()
    total_generation = sum(generation_s.values())
    timing = {
        "total_s": finished - started,
        "generation_s": total_generation,
        "generated_tokens": float(tokens),
        "tokens_per_s": tokens / total_generation if total_generation > 0 else 0.0,
        "execution_s": graded.execution_s,  # summed over sandbox jobs, which run in parallel with each other
        "math_grading_s": graded.math_s,
        "grading_wait_s": finished - generation_done,  # grading left after the last generation
        **{f"generation_s/{name}": seconds for name, seconds in generation_s.items()},
    }
    config = {
        "benchmarks": list(benchmarks),
        "limit": limit,
        **settings,
        "max_new_tokens_used": _max_new_tokens_used(problem_sets, max_new_tokens, style),
        "prompt_style": style,
        "seed": seed,
        "pass_k": pass_k,
        "benchmark_files": {name: str(path) for name, path in (benchmark_files or {}).items()},
        "problems": {name: len(problems) for name, problems in problem_sets.items()},
        "executor": executor.config.model_dump(include={"timeout_s", "memory_mb", "workers"}),
    }
    return EvalReport(
        scores=graded.scores, records=graded.records, config=config, timing=timing, pass_at=graded.pass_at
    )


def _max_new_tokens_used(
    problem_sets: dict[str, list[Problem]], max_new_tokens: int | None, style: str
) -> dict[str, int | None]:
    """The token budget each benchmark ran with: the one asked for, else its kind's default."""
    return {
        name: max_new_tokens or DEFAULT_MAX_NEW_TOKENS[problems[0].kind][style] if problems else None
        for name, problems in problem_sets.items()
    }


def _checked_pass_k(samples: int, temperature: float, pass_k: int | None, max_new_tokens: int | None) -> int:
    """The k of pass@k to score with, after rejecting settings that cannot work."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1 and temperature == 0:
        raise ValueError("several samples of greedy decoding are identical: set a temperature > 0 for pass@k")
    pass_k = pass_k or samples
    if not 1 <= pass_k <= samples:
        raise ValueError(f"pass@k needs 1 <= k <= samples ({samples}), got k={pass_k}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return pass_k


@dataclass
class _Graded:
    """Every grade of a run, collected: scores, pass@k per benchmark, records and grading time."""

    scores: dict[str, float] = field(default_factory=dict)
    pass_at: dict[str, dict[str, float]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    execution_s: float = 0.0
    math_s: float = 0.0


def _collect_grades(pending: dict[str, list[_Submitted]], samples: int, pass_k: int) -> _Graded:
    """Wait for every grade; pass@k per benchmark, one record per problem, and time spent grading."""
    pass_ks = sorted({1, pass_k})
    graded = _Graded()
    for name, items in pending.items():
        per_problem = []
        for item in items:
            grades = [grade.result() for grade in item.grades]
            seconds = sum(grade.seconds for grade in grades)
            if item.problem.kind == "math":
                graded.math_s += seconds
            else:
                graded.execution_s += seconds
            correct = sum(grade.correct for grade in grades)
            per_problem.append({str(k): pass_at_k(samples, correct, k) for k in pass_ks})
            graded.records.append(_record(item, grades, pass_ks))
        count = max(len(per_problem), 1)
        graded.pass_at[name] = {
            key: sum(row[key] for row in per_problem) / count for key in map(str, pass_ks)
        }
        graded.scores[name] = graded.pass_at[name][str(pass_k)]
    return graded
