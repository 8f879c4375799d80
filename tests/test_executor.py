"""The Executor API: validation, statuses, determinism and the answer checks, in the real sandbox."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from azr.executor import (
    ExecResult,
    Executor,
    ExecutorConfig,
    SandboxUnavailableError,
    Status,
    Verdict,
)
from azr.executor.sandbox import probe_bwrap

IDENTITY = "def f(a):\n    return a"


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(ExecutorConfig(workers=2, timeout_s=0.5, max_output_chars=1000)) as ex:
        yield ex


def validate(executor: Executor, program: str, input_expr: str) -> ExecResult:
    return executor.validate(program, input_expr).result(timeout=30)


def test_bubblewrap_is_used_on_this_machine(executor: Executor) -> None:
    assert probe_bwrap(ExecutorConfig().tmp_size_mb) is None
    assert executor.sandboxed


def test_validate_returns_the_output_repr(executor: Executor) -> None:
    result = validate(executor, "def f(a, b, c):\n    return (a + b)[::-1] * c", "'Lab', 'retest', 2")
    assert result == ExecResult(Status.OK, "'tseterbaLtseterbaL'", None, result.seconds)
    assert result.ok and result.seconds > 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("return 1 / 0", Status.ERROR, "ZeroDivisionError"),
        ("return f(a)", Status.ERROR, "RecursionError"),
        ("raise SystemExit(3)", Status.ERROR, "SystemExit"),
        ("return [0] * 10**10", Status.MEMORY, "MemoryError"),
        ("while True:\n        pass", Status.TIMEOUT, "CPU time"),
        ("return 'x' * 2000", Status.BAD_OUTPUT, "more than the limit of 1000"),
        ("return object()", Status.BAD_OUTPUT, "'object'"),
        ("return (x for x in a)", Status.BAD_OUTPUT, "'generator'"),
        ("return f", Status.BAD_OUTPUT, "'function'"),
        ("return float('nan')", Status.BAD_OUTPUT, "non-finite"),
        ("return [1.0, float('inf')]", Status.BAD_OUTPUT, "non-finite"),
        ("x = [a]\n    x.append(x)\n    return x", Status.BAD_OUTPUT, "cycle"),
        ("return 10 ** 5000", Status.BAD_OUTPUT, "no usable repr"),
        ("return id(object()) % 100003", Status.NONDETERMINISTIC, "two runs disagree"),
    ],
)
def test_statuses(executor: Executor, body: str, status: Status, error: str) -> None:
    result = validate(executor, f"def f(a):\n    {body}", "[1, 2]")
    assert result.status is status, result
    assert result.output is None
    assert error in (result.error or "")


def test_plain_values_of_every_allowed_type_round_trip(executor: Executor) -> None:
    value = "(None, True, 3, -2.5, 1+2j, 'é', b'\\x00', [1], {'k': {1, 2}}, frozenset({3}), set(), ...)"
    result = validate(executor, IDENTITY, value)
    assert result.ok, result
    shared = validate(executor, "def f(a):\n    x = [a]\n    return [x, x]", "1")  # shared, not a cycle
    assert shared.output == "[[1], [1]]"


def test_subclasses_of_plain_types_are_not_plain(executor: Executor) -> None:
    result = validate(executor, "from collections import Counter\ndef f(a):\n    return Counter(a)", "'aab'")
    assert result.status is Status.BAD_OUTPUT


def test_banned_programs_never_reach_the_sandbox(executor: Executor) -> None:
    result = validate(executor, "import os\ndef f(a):\n    return os.getpid()", "1")
    assert result.status is Status.BANNED and result.seconds == 0.0
    assert validate(executor, IDENTITY, "__import__('os')").status is Status.BANNED
    missing_f = validate(executor, "def g(a):\n    return a", "1")
    assert missing_f.status is Status.ERROR and "no top-level function `f`" in missing_f.error


def test_string_sets_are_ordered_the_same_in_every_worker() -> None:
    program = "def f(a):\n    return list({w + str(i) for i, w in enumerate(a.split())})"
    text = "'the quick brown fox jumps over the lazy dog'"
    outputs = set()
    for _ in range(2):  # two executors: fresh worker processes each time
        with Executor(ExecutorConfig(workers=1, timeout_s=1)) as ex:
            result = ex.validate(program, text).result(timeout=30)
            assert result.ok
            outputs.add(result.output)
    assert len(outputs) == 1


def test_validate_inputs_gives_one_result_per_input(executor: Executor) -> None:
    futures = executor.validate_inputs("def f(a):\n    return 10 // a", ["1", "0", "5"])
    results = [future.result(timeout=30) for future in futures]
    assert [r.status for r in results] == [Status.OK, Status.ERROR, Status.OK]
    assert [r.output for r in results] == ["10", None, "2"]
    banned = executor.validate_inputs("import sys\ndef f(a):\n    return a", ["1", "2"])
    assert [future.result().status for future in banned] == [Status.BANNED, Status.BANNED]


def verdict(future) -> Verdict:  # type: ignore[no-untyped-def]
    return future.result(timeout=30)


def test_check_deduction_compares_values(executor: Executor) -> None:
    assert verdict(executor.check_deduction("[1, 2]", "[1,2]")).correct
    assert verdict(executor.check_deduction("{'a': 1, 'b': 2}", "{'b': 2, 'a': 1}")).correct
    assert verdict(executor.check_deduction("'ab'", '"ab"')).correct
    assert not verdict(executor.check_deduction("(1,)", "[1]")).correct
    unparsable = verdict(executor.check_deduction("1", "1 +"))
    assert not unparsable.correct and unparsable.status is Status.ERROR and "SyntaxError" in unparsable.error


def test_check_deduction_refuses_always_equal_objects(executor: Executor) -> None:
    cheat = "type('Eq', (), {'__eq__': lambda s, o: True})()"
    result = verdict(executor.check_deduction("[1, 2]", cheat))
    assert not result.correct and result.status is Status.BAD_OUTPUT


def test_check_deduction_evaluates_only_in_the_sandbox(executor: Executor) -> None:
    result = verdict(executor.check_deduction("1", "__import__('os').getpid()"))
    assert not result.correct and result.status is Status.BANNED


def test_check_abduction(executor: Executor) -> None:
    program = "def f(a, b):\n    return a * b"
    assert verdict(executor.check_abduction(program, "3, 4", "12")).correct
    assert verdict(executor.check_abduction(program, "2, 6", "12")).correct  # any input that works
    assert not verdict(executor.check_abduction(program, "2, 5", "12")).correct
    failing = verdict(executor.check_abduction(program, "None, 1", "12"))
    assert not failing.correct and failing.status is Status.ERROR and "TypeError" in failing.error


def test_check_induction(executor: Executor) -> None:
    pairs = [("1", "2"), ("5", "6"), ("-1", "0")]
    assert verdict(executor.check_induction("def f(x):\n    return x + 1", pairs)).correct
    wrong = verdict(executor.check_induction("def f(x):\n    return x * 2", pairs))
    assert not wrong.correct and wrong.status is Status.OK and "wrong output" in wrong.error
    cheat = "def f(x):\n    class E:\n        def __eq__(self, o):\n            return True\n    return E()"
    assert not verdict(executor.check_induction(cheat, pairs)).correct
    stateful = "count = []\ndef f(x):\n    count.append(1)\n    return len(count)"
    assert verdict(executor.check_induction(stateful, [("0", "1"), ("0", "1")])).correct  # fresh per pair


def test_run_tests(executor: Executor) -> None:
    program = "def add(a, b):\n    return a + b"
    assert verdict(executor.run_tests(program, "assert add(1, 2) == 3")).correct
    failed = verdict(executor.run_tests(program, "assert add(1, 2) == 4"))
    assert not failed.correct and failed.status is Status.ERROR and "AssertionError" in failed.error
    assert verdict(executor.run_tests("import sys\nx = sys.maxsize", "assert x > 0")).correct


def test_submission_is_thread_safe(executor: Executor) -> None:
    results: list[ExecResult] = []
    lock = threading.Lock()

    def submit(offset: int) -> None:
        futures = [executor.validate("def f(a):\n    return a * a", str(offset + i)) for i in range(20)]
        with lock:
            results.extend(future.result(timeout=30) for future in futures)

    threads = [threading.Thread(target=submit, args=(100 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80 and all(result.ok for result in results)


def test_held_jobs_run_where_the_caller_says(executor: Executor) -> None:
    handed_out = []

    def run(jobs):
        handed_out.append(jobs)
        return executor.run_jobs(jobs)

    with executor.held_jobs(run):
        result = executor.validate("def f(a):\n    return a * 2", "21")
        verdict = executor.check_deduction("42", "6 * 7")
        assert not result.done() and not handed_out  # held until the block ends
    assert [job["kind"] for job in handed_out[0]] == ["run", "deduction"]
    assert result.result().output == "42" and verdict.result().correct


def test_closed_executor_refuses_work() -> None:
    ex = Executor(ExecutorConfig(workers=1))
    ex.close()
    ex.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        ex.validate(IDENTITY, "1")


def test_require_sandbox_refuses_without_bubblewrap() -> None:
    with pytest.raises(SandboxUnavailableError, match="require_sandbox"):
        Executor(ExecutorConfig(use_bwrap=False, require_sandbox=True))


def test_fallback_warns_and_still_isolates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="azr.executor")
    unbanned = ExecutorConfig(workers=1, timeout_s=0.5, use_bwrap=False, banned_modules=(), banned_names=())
    with Executor(unbanned) as ex:
        assert not ex.sandboxed
        env = ex.validate("import os\ndef f(a):\n    return sorted(os.environ)", "0").result(timeout=30)
        fork = ex.validate("import os\ndef f(a):\n    return os.fork()", "0").result(timeout=30)
        loop = ex.validate("def f(a):\n    while True:\n        pass", "0").result(timeout=30)
    with Executor(unbanned) as ex:
        assert ex.validate(IDENTITY, "1").result(timeout=30).ok
    warnings = [r for r in caplog.records if "WEAKER isolation" in r.getMessage()]
    assert len(warnings) == 1  # once per process, however many executors
    assert env.output == "['HOME', 'LC_ALL', 'PYTHONHASHSEED', 'TMPDIR']"
    assert fork.status is Status.ERROR and "PermissionError" in fork.error
    assert loop.status is Status.TIMEOUT


def test_big_jobs_and_big_answers_do_not_deadlock_the_pipeline() -> None:
    # Jobs above the pipelining threshold wait until they are the oldest; answers near the output cap
    # come back while small jobs queue behind them.
    settings = ExecutorConfig(workers=1, timeout_s=2, max_output_chars=200_000)
    big_program = f"PAD = {'x' * 40_000!r}\ndef f(n):\n    return PAD[:n]"
    with Executor(settings) as ex:
        futures = [ex.validate(big_program, str(n)) for n in (10, 150_000, 0)]
        futures += [ex.validate("def f(n):\n    return 'y' * n", "150000") for _ in range(3)]
        results = [future.result(timeout=60) for future in futures]
    assert [len(r.output or "") for r in results] == [12, 40_002, 2, 150_002, 150_002, 150_002]
