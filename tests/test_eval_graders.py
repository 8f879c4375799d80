"""Graders on known answers: every benchmark's reference scores 100%, deliberately wrong answers score 0%."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from azr.evaluation.benchmarks import Problem, load_benchmark
from azr.evaluation.graders import submit_grade
from azr.evaluation.math_grading import MathGrader, extract_math_answer, last_boxed, last_number
from azr.evaluation.prompting import PromptStyle, build_prompt, extract_answer
from azr.executor import Executor, ExecutorConfig

# Two MBPP+ references cannot pass within the default 10 s CPU budget per sandbox job, because running
# the reference and the candidate on every plus input costs more than that: Mbpp/599 (sum_average on
# n up to 1e8) and Mbpp/255 (combinations_with_replacement of long lists). `--exec-timeout` raises it.
MBPP_TOO_SLOW = {"Mbpp/255", "Mbpp/599"}
# Rows whose inputs need the tuple and complex retries of the differential test, plus outputs that
# are `re.Match` objects, and a fixed spread of the rest.
MBPP_SAMPLE = {"Mbpp/106", "Mbpp/124", "Mbpp/252", "Mbpp/580", "Mbpp/720", "Mbpp/737", "Mbpp/787", "Mbpp/794"}


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2)) as pool:
        yield pool


@pytest.fixture(scope="module")
def math_grader() -> Iterator[MathGrader]:
    with MathGrader() as grader:
        yield grader


def reference_response(problem: Problem, style: PromptStyle) -> str:
    """What a model that knows the answer would write, in the format the prompt asks for."""
    if problem.kind == "math":
        return f"The computation gives the result.\n\\boxed{{{problem.reference}}}"
    if problem.kind == "output":
        if style == "chat":
            return f"```python\nassert f({problem.gold_input}) == {problem.gold_output}\n```"
        return f" {problem.gold_output}"
    if problem.kind == "input":
        if style == "chat":
            return f"```python\nassert f({problem.gold_input}) == {problem.gold_output}\n```"
        return f"{problem.gold_input}) == {problem.gold_output}"
    if style == "chat":
        return f"Here it is:\n```python\n{problem.reference}\n```"
    return problem.reference


def wrong_response(problem: Problem, style: PromptStyle) -> str:
    if problem.kind == "math":
        return "\\boxed{-987654.321}"
    if problem.kind == "output":
        value = "('azr', 'wrong', -987654)"
        return (
            f"```python\nassert f({problem.gold_input}) == {value}\n```" if style == "chat" else f" {value}"
        )
    if problem.kind == "input":
        # An input that raises: a fixed wrong input can still reproduce some outputs (e.g. False).
        return f"```python\nassert f(1 / 0) == {problem.gold_output}\n```" if style == "chat" else "1 / 0)"
    if style == "completion" and f"def {problem.entry_point}(" in problem.question:
        return "    return 'azr-wrong'\n"
    return f"def {problem.entry_point}(*args):\n    return 'azr-wrong'\n"


def score(problems, respond, style, executor, math_grader) -> tuple[float, list[str]]:
    pending = [
        (
            problem,
            submit_grade(
                problem, extract_answer(problem, respond(problem, style), style), executor, math_grader
            ),
        )
        for problem in problems
    ]
    results = [(problem, grade.result()) for problem, grade in pending]
    failures = [
        f"{problem.id}: {grade.status} {grade.error}" for problem, grade in results if not grade.correct
    ]
    return sum(grade.correct for _, grade in results) / len(results), failures


@pytest.mark.parametrize("style", ["chat", "completion"])
@pytest.mark.parametrize("name", ["cruxeval-o", "cruxeval-i", "humaneval"])
def test_code_references_pass_and_wrong_answers_fail(name, style, executor, math_grader):
    problems = load_benchmark(name)
    if style == "completion" and name.startswith("cruxeval"):
        problems = problems[::8]  # the chat run covers all 800 rows; the other style needs only a spread
    accuracy, failures = score(problems, reference_response, style, executor, math_grader)
    assert failures == [] and accuracy == 1.0
    wrong_sample = problems[:: max(1, len(problems) // 60)]
    accuracy, _ = score(wrong_sample, wrong_response, style, executor, math_grader)
    assert accuracy == 0.0


def test_mbppplus_references_pass_on_a_fixed_sample(executor, math_grader):
    problems = load_benchmark("mbppplus")
    sample = [
        p
        for i, p in enumerate(problems)
        if (p.id in MBPP_SAMPLE or i % 25 == 0) and p.id not in MBPP_TOO_SLOW
    ]
    assert len(sample) >= 20
    for style in ("chat", "completion"):
        accuracy, failures = score(sample, reference_response, style, executor, math_grader)
        assert failures == [] and accuracy == 1.0
    accuracy, _ = score(sample, wrong_response, "chat", executor, math_grader)
    assert accuracy == 0.0


def test_mbppplus_grade_reports_base_and_plus(executor, math_grader):
    problem = next(p for p in load_benchmark("mbppplus") if p.id == "Mbpp/2")
    # Right on the three base inputs only (which share elements); wrong on plus inputs without overlap.
    program = "def similar_elements(a, b):\n    common = tuple(set(a) & set(b))\n    return common or (0,)\n"
    grade = submit_grade(problem, program, executor, math_grader).result()
    assert not grade.correct and grade.details == {"base_correct": True, "plus_correct": False}


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("aime24", 1),
        ("aime25", 1),
        ("amc23", 1),
        ("math500", 10),
        ("minerva", 6),
        ("olympiadbench", 12),
        ("gsm8k", 40),
    ],
)
def test_math_references_verify_and_wrong_answers_do_not(name, step, executor, math_grader):
    problems = load_benchmark(name)[::step]
    assert all(problem.reference for problem in problems)
    accuracy, failures = score(problems, reference_response, "chat", executor, math_grader)
    assert failures == [] and accuracy == 1.0
    accuracy, _ = score(problems, wrong_response, "chat", executor, math_grader)
    assert accuracy == 0.0


@pytest.mark.parametrize(
    ("gold", "answer", "equal"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{1}{2}", "\\frac12", True),
        ("\\tfrac{3}{4}", "3/4", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
        ("[1,3)", "[1, 3)", True),
        ("(1,3]", "[1,3)", False),
        ("(-\\infty, 2]", "(-\\infty,2]", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
        ("x=3", "3", True),
        ("1,2", "2, 1", True),
        ("10", "10.0", True),
        ("3", "4", False),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ],
)
def test_math_verify_equivalences(gold, answer, equal, math_grader):
    assert math_grader.submit(gold, answer).result().correct is equal


def test_answer_extraction():
    assert last_boxed("a \\boxed{\\frac{1}{2}} then \\boxed{x^{2}}.") == "x^{2}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed 5.") == "5"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_number("It costs 1,234.5 dollars, not 3") == "3"
    assert extract_math_answer("so 12 apples, or 1,200 cents") == "1200"
    assert extract_math_answer("no digits here") is None


def test_math_grader_works_off_the_main_thread_and_guards_time():
    with MathGrader() as grader:
        results = []
        thread = threading.Thread(
            target=lambda: results.append(grader.submit("\\frac{1}{2}", "0.5").result())
        )
        thread.start()
        thread.join()
        assert results[0].correct and results[0].status == "ok"
        assert grader.submit("1", None).result().status == "no_answer"
        assert grader.submit("1", "9" * 5000).result().status == "too_long"
    # A worker that cannot answer in time is killed and the answer graded wrong.
    with MathGrader(host_deadline_s=0.01) as impatient:
        verdict = impatient.submit("1", "1").result()
        assert not verdict.correct and verdict.status == "timeout"


def test_completion_prompts_end_without_trailing_space():
    output_problem, input_problem = (
        load_benchmark("cruxeval-o", limit=1)[0],
        load_benchmark("cruxeval-i", limit=1)[0],
    )
    output_prompt = build_prompt(output_problem, "completion")
    assert output_prompt.text.endswith(
        f"assert f({output_problem.gold_input}) =="
    ) and output_prompt.stop == ("\n",)
    assert build_prompt(input_problem, "completion").text.endswith(
        f"assert {input_problem.gold_output} == f("
    )
    chat_prompt = build_prompt(output_problem, "chat")
    assert chat_prompt.chat and output_problem.question in chat_prompt.text


def test_cruxeval_extraction_is_strict_about_format():
    problem = load_benchmark("cruxeval-i", limit=1)[0]
    assert extract_answer(problem, "[1, 2], 3) == [5]  # comment", "completion") == "[1, 2], 3"
    assert extract_answer(problem, "no closing paren", "completion") is None
    assert extract_answer(problem, "assert f('a', (1, 2)) == 3", "chat") == "'a', (1, 2)"
    assert extract_answer(problem, "I think the answer is 4", "chat") is None
