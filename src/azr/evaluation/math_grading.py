"""Grading math answers: extracting the final answer from a response and judging it with math-verify.

math-verify guards its parsing and comparison with `signal.alarm`, which only works in the main thread
of a process; called from a worker thread (the evaluation runner, a trainer callback) it either raises
or runs without a time limit. So grading runs in a separate worker process, where math-verify is in its
own main thread and its alarm-based limits work, and the host adds a hard deadline on top: a worker that
does not answer in time (sympy stuck in C code, say) is killed and replaced, and that answer is graded
wrong with status "timeout". `MathGrader` is thread-safe and returns futures, like the executor.
"""

from __future__ import annotations

import json
import queue
import re
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

MATH_VERIFY_TIMEOUT_S = 5
"""math-verify's own limit on parsing one string and on one comparison (inside the worker process)."""
HOST_DEADLINE_S = 30.0
"""The host kills a worker that has not answered one grading request after this many seconds."""
MAX_ANSWER_CHARS = 1_000
"""Longer extracted answers are graded wrong without parsing: sympy's cost grows fast with length."""

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced; None if none."""
    start, command = max((text.rfind(command), command) for command in ("\\boxed", "\\fbox"))
    if start < 0:
        return None
    rest = text[start + len(command) :].lstrip()
    if not rest.startswith("{"):
        # `\boxed 5` (no braces) is valid LaTeX for a single token.
        token = rest.split(maxsplit=1)[0].rstrip("$.") if rest else ""
        return token or None
    opening = len(text) - len(rest)
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[opening + 1 : index]
    return None  # unclosed brace: the response was cut off inside the box


def last_number(text: str) -> str | None:
    """The last number written in `text` (thousands separators removed), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def extract_math_answer(response: str) -> str | None:
    """The model's final answer: the last `\\boxed{}` content, else the last number, else None."""
    boxed = last_boxed(response)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    return last_number(response)


@dataclass(frozen=True)
class MathVerdict:
    """Outcome of grading one answer. `status` is "ok", "no_answer", "too_long", "timeout" or "error"."""

    correct: bool
    status: str
    seconds: float = 0.0
    error: str | None = None


def _verify_in_worker(gold: str, answer: str) -> bool:
    # Imported here: only the worker process pays for sympy and math-verify.
    from math_verify import parse, verify

    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
    answer_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
    if not gold_parsed or not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=MATH_VERIFY_TIMEOUT_S))


def worker_main() -> None:
    """Entry point of a grading worker process: one JSON request per stdin line, one reply per stdout line."""
    for line in sys.stdin:
        gold, answer = json.loads(line)
        try:
            reply = ["ok", _verify_in_worker(gold, answer), None]
        except Exception as error:  # a parser bug must not kill the worker
            reply = ["error", False, f"{type(error).__name__}: {error}"[:300]]
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


_WORKER_COMMAND = "from azr.evaluation.math_grading import worker_main; worker_main()"


class _GradingProcess:
    """One worker process (a fresh interpreter, so nothing of the host's threads or state is inherited)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def grade(self, gold: str, answer: str, deadline_s: float) -> tuple[str, bool, str | None]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([gold, answer]) + "\n")
        self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], deadline_s)[0]:
            raise TimeoutError
        line = self.process.stdout.readline()
        if not line:
            raise EOFError(f"grading worker exited with status {self.process.poll()}")
        status, correct, error = json.loads(line)
        return status, correct, error

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class MathGrader:
    """Judges math answers against gold answers with math-verify, in `workers` background processes.

    `submit` returns a `Future[MathVerdict]` at once. Use as a context manager, or call `close()`.
    """

    def __init__(self, workers: int = 1, host_deadline_s: float = HOST_DEADLINE_S) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.host_deadline_s = host_deadline_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish queued requests and stop the worker processes. Idempotent."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def submit(self, gold: str, response_answer: str | None) -> Future:
        """Future[MathVerdict]: is the extracted answer mathematically equal to the gold answer?"""
        future: Future = Future()
        if response_answer is None:
            future.set_result(MathVerdict(False, "no_answer"))
        elif len(response_answer) > MAX_ANSWER_CHARS:
            future.set_result(MathVerdict(False, "too_long"))
        else:
            self._jobs.put((gold, response_answer, future))
        return future

    def _serve(self) -> None:
        process: _GradingProcess | None = None
        while (item := self._jobs.get()) is not None:
            gold, answer, future = item
            started = time.monotonic()
            try:
                process = process or _GradingProcess()
                status, correct, error = process.grade(gold, answer, self.host_deadline_s)
            except (TimeoutError, EOFError, OSError, ValueError) as lost:
                if process is not None:
                    process.kill()
                process = None
                timed_out = isinstance(lost, TimeoutError)
                status, correct = ("timeout" if timed_out else "error"), False
                error = (
                    f"no verdict within {self.host_deadline_s:g} s" if timed_out else f"worker lost: {lost}"
                )
            future.set_result(MathVerdict(correct, status, time.monotonic() - started, error))
        if process is not None:
            process.kill()
