"""The `Executor`: a pool of warm sandbox workers behind a thread-safe, future-returning API.

Each worker process is driven by one host thread that takes jobs from a shared queue. The host keeps
its own deadline on every job (the worker's wall-clock cap plus a grace period): a worker that hangs
or dies is killed and replaced, the job in flight gets a status, and the rest of the batch goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from azr.executor.ast_check import (
    BannedCodeError,
    RejectedCodeError,
    check_expression,
    check_program,
    check_value_expression,
)
from azr.executor.config import ExecutorConfig
from azr.executor.results import ExecResult, Status, Verdict
from azr.executor.sandbox import WorkerLaunch, resolve_sandboxed, seccomp_filter, worker_launch
from azr.futures import done, then

_STARTUP_TIMEOUT_S = 30.0
_PIPELINE_DEPTH = 2  # jobs in flight per worker: the one running and the next one
_PIPELINE_MAX_BYTES = 32 * 1024  # only jobs that fit in a pipe's buffer are sent ahead
_SALT_BYTES = 34  # one per heap size class perturbed in the worker, plus two
_MAX_MESSAGE_BYTES = 1 << 26


class WorkerLostError(RuntimeError):
    """The worker process died, hung past the host deadline, or broke the protocol."""


class WorkerHungError(WorkerLostError):
    """The worker gave no answer before the host's deadline for the job it was running."""


@dataclass
class _Pending:
    """A job taken from the queue by a host thread, with its future and delivery state."""

    job: dict[str, Any]
    future: Future
    message: bytes  # the framed job, encoded once
    sent: bool = False
    attempts: int = 0


class _WorkerProcess:
    """One sandboxed worker process and the framed JSON protocol spoken with it."""

    def __init__(self, launch: WorkerLaunch, filter_hex: str) -> None:
        self.launch = launch
        # Closed in kill(): the worker's stderr outlives __init__ for failure reports.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            launch.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=launch.env,
            cwd=launch.cwd,
            start_new_session=True,  # its own process group, so the fallback's children die with it
        )
        try:
            self._send({"seccomp": filter_hex, "tmp": launch.tmp})
            ready = self._receive(time.monotonic() + _STARTUP_TIMEOUT_S)
        except WorkerLostError as error:
            self.kill()
            raise WorkerLostError(f"worker failed to start: {error}; stderr: {self.stderr_tail()}") from None
        if not ready.get("ready"):
            self.kill()
            raise WorkerLostError(f"worker sent {ready!r} instead of its ready message")

    def stderr_tail(self) -> str:
        """The end of what the worker wrote to stderr (startup failures explain themselves there)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-500:]

    def _send(self, message: dict[str, Any]) -> None:
        self.send_frame(encode_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Write one framed message to the worker."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(frame)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerLostError(f"cannot write to worker: {error}") from None

    def _read_exact(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                code = self.process.poll()
                raise WorkerLostError(f"worker exited (status {code})")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _receive(self, deadline: float) -> dict[str, Any]:
        try:
            (size,) = struct.unpack(">I", self._read_exact(4, deadline))
            if size > _MAX_MESSAGE_BYTES:
                raise WorkerLostError(f"worker sent an oversized message ({size} bytes)")
            message = json.loads(self._read_exact(size, deadline))
        except TimeoutError:
            raise WorkerHungError("no answer from the worker before the host deadline") from None
        except ValueError as error:
            raise WorkerLostError(f"malformed message from worker: {error}") from None
        if not isinstance(message, dict):
            raise WorkerLostError("malformed message from worker")
        return message

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """The answer to the oldest job sent, waiting at most `timeout_s` seconds."""
        return self._receive(time.monotonic() + timeout_s)

    def kill(self) -> None:
        """Kill the worker and everything it started, reap it and remove its scratch directory."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # unflushed input to a dead worker: nothing to save
                    stream.close()
        self._stderr.close()
        if self.launch.owned_dir:
            shutil.rmtree(self.launch.owned_dir, ignore_errors=True)


def encode_frame(message: dict[str, Any]) -> bytes:
    """A message as the worker protocol frames it: 4-byte big-endian length, then UTF-8 JSON."""
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data


def _status_of(raw: dict[str, Any]) -> Status:
    try:
        return Status(raw.get("status"))
    except ValueError:
        return Status.SANDBOX_ERROR


def _error_of(raw: dict[str, Any]) -> str | None:
    error = raw.get("error")
    return None if error is None else str(error)


def _seconds_of(raw: dict[str, Any]) -> float:
    seconds = raw.get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else 0.0


def _to_result(raw: dict[str, Any]) -> ExecResult:
    status = _status_of(raw)
    output = raw.get("output")
    if status is Status.OK and not isinstance(output, str):
        return ExecResult(Status.SANDBOX_ERROR, error="malformed result from the worker")
    return ExecResult(status, output if status is Status.OK else None, _error_of(raw), _seconds_of(raw))


def _to_verdict(raw: dict[str, Any]) -> Verdict:
    status = _status_of(raw)
    correct = status is Status.OK and raw.get("correct") is True
    return Verdict(correct, status, _error_of(raw), _seconds_of(raw))


class Executor:
    """Validates proposals and checks answers by running untrusted Python in sandboxed workers.

    Thread-safe: any thread may submit; every method returns a `concurrent.futures.Future` at once.
    Use as a context manager, or call `close()`, so that no worker process outlives it.
    """

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        self.sandboxed = resolve_sandboxed(
            self.config.tmp_size_mb, self.config.require_sandbox, self.config.use_bwrap
        )
        self._filter_hex = seccomp_filter(self.config.require_sandbox).hex()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._held: list[tuple[dict[str, Any], Future]] | None = None  # jobs kept back by `held_jobs`
        self._live: set[_WorkerProcess] = set()
        started = [threading.Event() for _ in range(self.config.worker_count)]
        self._threads = [
            threading.Thread(target=self._serve, args=(event,), name=f"azr-executor-{index}", daemon=True)
            for index, event in enumerate(started)
        ]
        for thread in self._threads:
            thread.start()
        for event in started:  # warm workers before the first job (they start in parallel)
            event.wait(_STARTUP_TIMEOUT_S)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish queued jobs, stop every worker and reap it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def worker_pids(self) -> list[int]:
        """Host-side PIDs of the live worker processes (bwrap or python), for monitoring and tests."""
        with self._lock:
            return [worker.process.pid for worker in self._live]

    def _start_worker(self) -> _WorkerProcess:
        worker = _WorkerProcess(worker_launch(self.sandboxed, self.config.tmp_size_mb), self._filter_hex)
        with self._lock:
            self._live.add(worker)
        return worker

    def _retire(self, worker: _WorkerProcess) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()

    def _serve(self, started: threading.Event) -> None:
        """One host thread: feeds its worker from the shared queue and resolves the futures.

        Up to _PIPELINE_DEPTH jobs are sent ahead, so the worker starts the next job as soon as it has
        answered one instead of waiting for this thread to wake up and send it.
        """
        worker: _WorkerProcess | None = None
        try:
            worker = self._start_worker()
        except (WorkerLostError, OSError):
            worker = None  # retried when the first job arrives, which then reports the failure
        started.set()
        pending: deque[_Pending] = deque()
        stopping = False
        while pending or not stopping:
            while not stopping and len(pending) < _PIPELINE_DEPTH:
                try:
                    item = self._jobs.get(block=not pending)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                job, future = item
                if future.set_running_or_notify_cancel():
                    pending.append(_Pending(job, future, encode_frame(job)))
            if pending:
                worker = self._advance(worker, pending)
        if worker is not None:
            self._retire(worker)

    def _advance(self, worker: _WorkerProcess | None, pending: deque[_Pending]) -> _WorkerProcess | None:
        """Send what is unsent and resolve the oldest job, replacing the worker if it is lost.

        A job whose worker hangs past the host deadline times out; a job that loses its worker twice
        fails with sandbox_error; jobs queued behind a lost worker are resent to its replacement.
        """
        head = pending[0]
        runs = len(head.job.get("salts", ())) or 1
        host_deadline = head.job["wall_s"] * runs + self.config.host_grace_s
        try:
            if worker is None:
                worker = self._start_worker()
            for entry in pending:
                # A big job is sent only when it is the oldest: a job waiting in a full pipe while the
                # worker writes a big answer to us would deadlock both sides.
                if not entry.sent and (entry is head or len(entry.message) <= _PIPELINE_MAX_BYTES):
                    worker.send_frame(entry.message)
                    entry.sent = True
            raw = worker.receive(host_deadline)
        except (WorkerLostError, OSError) as lost:
            if worker is not None:
                self._retire(worker)
                worker = None
            for entry in pending:
                entry.sent = False
            head.attempts += 1
            if isinstance(lost, WorkerHungError):
                raw = {"status": "timeout", "error": str(lost), "seconds": host_deadline}
            elif head.attempts >= 2:
                raw = {"status": "sandbox_error", "error": str(lost), "seconds": 0.0}
            else:
                return worker  # the head job is retried on a fresh worker
        except Exception as error:  # a bug here must fail this job, not silently kill the thread
            raw = {"status": "sandbox_error", "error": f"{type(error).__name__}: {error}", "seconds": 0.0}
        pending.popleft()
        head.future.set_result(raw)
        return worker

    # --- job submission ----------------------------------------------------------------------------------

    def _submit(self, kind: str, **fields: Any) -> Future:
        config = self.config
        job = {
            "kind": kind,
            "cpu_s": config.timeout_s,
            "wall_s": config.wall_timeout_s,
            "memory_mb": config.memory_mb,
            "max_output_chars": config.max_output_chars,
            "max_file_mb": config.max_file_mb,
            **fields,
        }
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            if self._held is not None:
                self._held.append((job, future))
            else:
                self._jobs.put((job, future))
        return future

    @contextlib.contextmanager
    def held_jobs(self, run: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Iterator[None]:
        """Hold the sandbox jobs submitted inside the block instead of queueing them; when the block ends,
        `run` gets them all (plain dicts) and returns their raw results in order, and their futures
        resolve as usual. A data-parallel job spreads a step's jobs over one pool per node this way
        (`azr.data_parallel.spread_over_nodes`), the other pools answering through `run_jobs`."""
        held: list[tuple[dict[str, Any], Future]] = []
        with self._lock:
            self._held = held
        try:
            yield
        finally:
            with self._lock:
                self._held = None
        results = run([job for job, _ in held])
        for (_, future), raw in zip(held, results, strict=True):
            future.set_result(raw)

    def run_jobs(self, jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run jobs as `held_jobs` hands them out on this pool; their raw results, in order."""
        futures = []
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            for job in jobs:
                futures.append(Future())
                self._jobs.put((job, futures[-1]))
        return [future.result() for future in futures]

    def _rejected(self, check: Callable[..., None], text: str, **kwargs: Any) -> ExecResult | None:
        """None when `text` passes the static check, else why not: banned, or malformed (an error)."""
        try:
            check(text, self.config.banned_modules, self.config.banned_names, **kwargs)
        except RejectedCodeError as error:
            status = Status.BANNED if isinstance(error, BannedCodeError) else Status.ERROR
            return ExecResult(status, error=str(error))
        return None

    def _validate_checked(self, program: str, input_expr: str) -> Future:
        rejected = self._rejected(check_expression, input_expr)
        if rejected is not None:
            return done(rejected)
        # Determinism: the worker runs f(input) once per salt, each in a separate forked process, and
        # compares the outputs. Salts that differ in every byte give the runs different heap layouts
        # (see worker.py), so id()-dependent output is caught although both runs fork from one worker.
        salt = os.urandom(_SALT_BYTES)
        salts = [salt.hex()]
        if self.config.check_determinism:
            salts.append(bytes(byte ^ 1 for byte in salt).hex())
        job = self._submit("run", program=program, input=input_expr, salts=salts)
        return then(job, _to_result)

    def validate(self, program: str, input_expr: str) -> Future:
        """Future[ExecResult]: AST ban check, then f(input) in the sandbox, twice for determinism."""
        rejected = self._rejected(check_program, program)
        if rejected is not None:
            return done(rejected)
        return self._validate_checked(program, input_expr)

    def validate_inputs(self, program: str, inputs: Sequence[str]) -> list[Future]:
        """One Future[ExecResult] per input, all against the same program (induction proposals)."""
        rejected = self._rejected(check_program, program)
        if rejected is not None:
            return [done(rejected) for _ in inputs]
        return [self._validate_checked(program, input_expr) for input_expr in inputs]

    def check_deduction(self, gold_output: str, predicted_output: str) -> Future:
        """Future[Verdict]: does the predicted output evaluate to a value equal to the gold output?"""
        rejected = self._rejected(check_value_expression, predicted_output, what="predicted output")
        if rejected is not None:
            return done(_refusal(rejected))
        job = self._submit("deduction", gold_output=gold_output, predicted_output=predicted_output)
        return then(job, _to_verdict)

    def check_abduction(self, program: str, predicted_input: str, gold_output: str) -> Future:
        """Future[Verdict]: does f(predicted_input) equal the gold output?"""
        rejected = self._rejected(check_program, program) or self._rejected(check_expression, predicted_input)
        if rejected is not None:
            return done(_refusal(rejected))
        job = self._submit("abduction", program=program, input=predicted_input, gold_output=gold_output)
        return then(job, _to_verdict)

    def check_induction(self, candidate_program: str, pairs: Sequence[tuple[str, str]]) -> Future:
        """Future[Verdict]: does the candidate reproduce every held-out (input, output) pair?"""
        rejected = self._rejected(check_program, candidate_program)
        if rejected is not None:
            return done(_refusal(rejected))
        job = self._submit("induction", program=candidate_program, pairs=[list(pair) for pair in pairs])
        return then(job, _to_verdict)

    def run_tests(self, program: str, test_code: str) -> Future:
        """Future[Verdict]: exec program, then test code, in one namespace; correct iff nothing raised.

        No AST ban here: benchmark solutions legitimately import sys or os; the sandbox contains them.
        """
        job = self._submit("tests", program=program, test_code=test_code)
        return then(job, _to_verdict)


def _refusal(rejected: ExecResult) -> Verdict:
    return Verdict(correct=False, status=rejected.status, error=rejected.error)
