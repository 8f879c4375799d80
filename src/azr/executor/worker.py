"""The in-sandbox worker: a long-lived process that forks one short-lived child per job.

Standard library only: this file is bind-mounted alone into the sandbox and run by the base
interpreter with `-S -s -B -P`, never the project's virtual environment. Protocol on stdin/stdout:
each message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The first
message configures the worker (`{"seccomp": hex}`); every later one is a job, answered by one result.

A job runs in a fresh fork, so nothing it does (poisoned builtins, leaked state) reaches the next job.
The child lowers its resource limits, closes every inherited descriptor, loads the seccomp filter and
only then touches untrusted code; it reports on a pipe that the worker reads under a wall-clock
deadline, killing the child when the deadline passes.
"""

import contextlib
import ctypes
import gc
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import time

# Preloaded so that the modules programs commonly import cost nothing per job (the child inherits them).
_PRELOADED = (
    "array", "bisect", "collections", "copy", "dataclasses", "decimal", "enum", "fractions", "functools",
    "heapq", "itertools", "operator", "queue", "re", "statistics", "string", "textwrap", "typing",
    "unicodedata",
)  # fmt: skip
for _name in _PRELOADED:
    importlib.import_module(_name)

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_MAX_ERROR_CHARS = 500
_MAX_RESULT_BYTES = 1 << 24
# Exact types only: a subclass (Counter, a bool-like int) could carry a custom __eq__ or __repr__.
_PLAIN_SCALARS = (type(None), type(Ellipsis), bool, int, float, complex, str, bytes)
_PLAIN_CONTAINERS = (tuple, list, set, frozenset, dict)

# Captured before any untrusted code runs: a program that rebinds builtins cannot fool the checks.
_repr, _type, _len, _bool, _id, _eval = repr, type, len, bool, id, eval
_isfinite = math.isfinite
_monotonic = time.monotonic
_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class BadOutput(Exception):
    """The value cannot serve as a gold answer (not plain data, not finite, or too long)."""


def _prctl(option, arg2, arg3=0):
    if _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


class SeccompFilter:
    """The filter program, laid out in memory once in the worker; every forked child loads it."""

    def __init__(self, filter_bytes):
        self._buffer = ctypes.create_string_buffer(filter_bytes, _len(filter_bytes))
        self._program = _SockFprog(_len(filter_bytes) // 8, ctypes.addressof(self._buffer))

    def load(self):
        """Install the filter in the calling process; no process can remove a seccomp filter."""
        if not _len(self._buffer.raw):  # the host found no filter for this machine (and warned)
            return
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(self._program))


# --- messages ------------------------------------------------------------------------------------


def _read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= _len(chunk)
    return b"".join(chunks)


def _read_message(fd):
    (size,) = struct.unpack(">I", _read_exact(fd, 4))
    return json.loads(_read_exact(fd, size))


def _write_message(fd, message):
    _write_frame(fd, json.dumps(message).encode())


def _write_frame(fd, data):
    _write_all(fd, struct.pack(">I", _len(data)) + data)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- values ----------------------------------------------------------------------------------------


def _check_plain(value):
    """Raise BadOutput unless `value` is plain data built from scalars, tuples, lists, sets and dicts.

    Shared sub-objects are fine (each is checked once); a container that contains itself is not.
    """
    verified, on_path = set(), set()
    stack = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        if leaving:
            on_path.discard(_id(item))
            verified.add(_id(item))
            continue
        kind = _type(item)
        if kind in _PLAIN_SCALARS:
            if kind is float and not _isfinite(item):
                raise BadOutput("output contains a non-finite float (nan/inf cannot be compared)")
            if kind is complex and not (_isfinite(item.real) and _isfinite(item.imag)):
                raise BadOutput("output contains a non-finite complex number")
            continue
        if kind not in _PLAIN_CONTAINERS:
            raise BadOutput(f"output contains an object of type {kind.__name__!r:.60}, not plain data")
        if _id(item) in verified:
            continue
        if _id(item) in on_path:
            raise BadOutput("output contains a reference cycle")
        on_path.add(_id(item))
        stack.append((item, True))
        if kind is dict:
            stack.extend((child, False) for child in item)  # the keys
            stack.extend((child, False) for child in item.values())
        else:
            stack.extend((child, False) for child in item)


def _plain_repr(value, max_chars):
    """The repr of a plain value that is bounded in size and reads back as an equal value."""
    _check_plain(value)
    try:
        text = _repr(value)
    except (ValueError, RecursionError) as error:  # e.g. ints beyond the digit limit, deep nesting
        raise BadOutput(f"output has no usable repr: {_type(error).__name__}") from None
    if _len(text) > max_chars:
        raise BadOutput(f"output repr has {_len(text)} characters, more than the limit of {max_chars}")
    return text


def _parse_value(text, what):
    """Evaluate an answer expression (inside the sandbox) and insist that it is plain data."""
    try:
        value = _eval(compile(text, f"<{what}>", "eval"), {})
    except SyntaxError as error:
        raise BadOutput(f"{what} does not parse: {error.msg}") from None
    try:
        _check_plain(value)
    except BadOutput as error:
        raise BadOutput(f"{what}: {error}") from None
    return value


def _equal(left, right):
    # Both sides are plain data, so == cannot run untrusted code; bool() of the result is safe too.
    return _bool(left == right)


# --- jobs (run inside the child) -----------------------------------------------------------------------


def _call_f(code, input_text):
    namespace = {"__name__": "__main__"}
    exec(code, namespace)
    return _eval(compile(f"f({input_text})", "<input>", "eval"), namespace)


def _job_run(job):
    code = compile(job["program"], "<program>", "exec")
    value = _call_f(code, job["input"])
    return {"status": "ok", "output": _plain_repr(value, job["max_output_chars"])}


def _job_deduction(job):
    gold = _parse_value(job["gold_output"], "gold output")
    predicted = _parse_value(job["predicted_output"], "predicted output")
    return {"status": "ok", "correct": _equal(gold, predicted)}


def _job_abduction(job):
    gold = _parse_value(job["gold_output"], "gold output")
    code = compile(job["program"], "<program>", "exec")
    value = _call_f(code, job["input"])
    _check_plain(value)
    return {"status": "ok", "correct": _equal(gold, value)}


def _job_induction(job):
    code = compile(job["program"], "<program>", "exec")
    for input_text, output_text in job["pairs"]:
        gold = _parse_value(output_text, "gold output")
        value = _call_f(code, input_text)  # fresh namespace per pair: no state carried between pairs
        _check_plain(value)
        if not _equal(gold, value):
            return {"status": "ok", "correct": False, "error": f"wrong output for input {input_text:.200}"}
    return {"status": "ok", "correct": True}


def _job_tests(job):
    namespace = {"__name__": "__main__"}
    exec(compile(job["program"], "<program>", "exec"), namespace)
    exec(compile(job["test_code"], "<tests>", "exec"), namespace)
    return {"status": "ok", "correct": True}


_JOBS = {
    "run": _job_run,
    "deduction": _job_deduction,
    "abduction": _job_abduction,
    "induction": _job_induction,
    "tests": _job_tests,
}


def _describe(error):
    name = _type(error).__name__
    try:
        message = str(error)
    except BaseException:  # a hostile exception whose __str__ fails
        message = ""
    return f"{name}: {message}"[:_MAX_ERROR_CHARS] if message else name


def _perturb_heap(salt):
    # Forked children share the worker's heap layout, so `id(object())` would repeat across two runs
    # in the same worker and hide nondeterminism. The host gives the two validation runs salts that
    # differ in every byte's lowest bit, so each small-object size class (and the malloc heap) is
    # shifted by a different amount in each run. The objects stay alive until the child exits.
    keep = [bytes(length) for index, length in enumerate(range(1, 513, 16)) for _ in range(salt[index] % 4)]
    keep.append(bytearray(4096 + 64 * salt[32]))
    keep.extend(object() for _ in range(salt[33] % 4))
    return keep


def _child(job, result_fd, seccomp, started):
    """Run one job in the forked child and never return."""
    entered = _monotonic()
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The profiling timer enforces the exact CPU budget (SIGPROF terminates); RLIMIT_CPU, in whole
        # seconds and beyond the program's reach (setrlimit is denied by seccomp), backs it up.
        signal.setitimer(signal.ITIMER_PROF, job["cpu_s"])
        cpu = math.ceil(job["cpu_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        address_space = job["base_address_space"] + job["memory_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        file_size = job["max_file_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.dup2(result_fd, 3)
        os.closerange(4, 1 << 16)
        result_fd = 3
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        os.chdir(job["cwd"])
        limited = _monotonic()
        seccomp.load()
        filtered = _monotonic()
        keep_alive = _perturb_heap(bytes.fromhex(job["salt"])) if "salt" in job else None  # noqa: F841
        ready = _monotonic()
    except BaseException as error:
        _write_frame(result_fd, json.dumps({"status": "sandbox_error", "error": _describe(error)}).encode())
        os._exit(0)
    try:
        result = _JOBS[job["kind"]](job)
    except BadOutput as error:
        result = {"status": "bad_output", "error": str(error)[:_MAX_ERROR_CHARS]}
    except MemoryError:
        result = {"status": "memory", "error": "MemoryError"}
    except BaseException as error:  # SystemExit and KeyboardInterrupt are program errors too
        result = {"status": "error", "error": _describe(error)}
    # Where a job's time goes, for benchmarks/executor.py; the host ignores it otherwise.
    result["timings"] = {
        "fork_s": entered - started,
        "limits_s": limited - entered,
        "seccomp_s": filtered - limited,
        "heap_perturb_s": ready - filtered,
        "run_s": _monotonic() - ready,
    }
    try:
        data = json.dumps(result).encode()
    except BaseException as error:
        data = json.dumps({"status": "sandbox_error", "error": _describe(error)}).encode()
    _write_frame(result_fd, data)
    os._exit(0)


def _outcome_of_exit(wait_status, rusage, cpu_s):
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        used = rusage.ru_utime + rusage.ru_stime
        if number in (signal.SIGPROF, signal.SIGXCPU) or (number == signal.SIGKILL and used >= cpu_s):
            return {"status": "timeout", "error": f"CPU time limit of {cpu_s:g} s exceeded"}
        return {"status": "error", "error": f"killed by signal {signal.Signals(number).name}"}
    code = os.WEXITSTATUS(wait_status)
    return {"status": "error", "error": f"exited with status {code} before reporting a result"}


def _clear_tmp(path, job_dir):
    """Remove everything a job left in the scratch directory (cheap when it left nothing)."""
    names = os.listdir(path)
    if names == ["job"] and not os.listdir(job_dir):
        return
    for name in names:
        target = os.path.join(path, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(target)


def _address_space_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _receive_result(read_fd, deadline):
    """Read the child's framed result; None with a reason if it never completes."""
    buffer = b""
    while True:
        if _len(buffer) >= 4:
            (size,) = struct.unpack(">I", buffer[:4])
            if size > _MAX_RESULT_BYTES:  # only a misbehaving child writes this much
                return None, "oversized"
            if _len(buffer) >= 4 + size:
                return buffer[4 : 4 + size], None
        remaining = deadline - _monotonic()
        if remaining <= 0:
            return None, "timeout"
        if not select.select([read_fd], [], [], remaining)[0]:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            return None, "eof"
        buffer += chunk


def run_job(job, seccomp, tmp, base_address_space):
    """Fork a child for `job` and wait for its result under the wall-clock deadline.

    Returns the result and a function that reaps the child and empties `tmp`: the caller answers the
    host first and cleans up afterwards, so the child's exit overlaps with the host's next step.
    `tmp` is the worker's private scratch directory; the child starts in a fresh directory inside it.
    The child's memory limit is `base_address_space` (the worker's own, measured once) plus the
    job's allowance.
    """
    job["base_address_space"] = base_address_space
    started = _monotonic()
    job_dir = os.path.join(tmp, "job")
    os.makedirs(job_dir, exist_ok=True)
    job["cwd"] = job_dir
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        os.close(read_fd)
        _child(job, write_fd, seccomp, started)
    os.close(write_fd)
    payload, failure = _receive_result(read_fd, started + job["wall_s"])
    os.close(read_fd)

    def clean_up():
        # Also stops a child that sent a result and kept running.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        outcome = os.wait4(pid, 0)
        _clear_tmp(tmp, job_dir)
        return outcome

    result = None
    if payload is not None:
        with contextlib.suppress(ValueError):
            result = json.loads(payload)
    if failure == "timeout":
        clean_up()
        result = {"status": "timeout", "error": f"wall-clock limit of {job['wall_s']:g} s exceeded"}
    elif not isinstance(result, dict) or "status" not in result:
        _, wait_status, rusage = clean_up()
        result = _outcome_of_exit(wait_status, rusage, job["cpu_s"])
    else:
        result["seconds"] = _monotonic() - started
        return result, clean_up
    result["seconds"] = _monotonic() - started
    return result, None


def run_repeated(job, seccomp, tmp, base_address_space):
    """Validation: run the job once per salt, each in its own fork, and insist on one output.

    Stops at the first run that fails (a failure is final and the next run would only cost time).
    The salts differ in every byte, so the runs' heap layouts differ and id()-dependent output shows.
    """
    first, seconds, clean_up = None, 0.0, None
    for salt in job["salts"]:
        if clean_up is not None:
            clean_up()
        result, clean_up = run_job(dict(job, salt=salt), seccomp, tmp, base_address_space)
        seconds += result["seconds"]
        if first is None:
            first = result
            if result["status"] != "ok":
                break
        elif result["status"] != "ok":
            first = {"status": result["status"], "error": f"second run: {result.get('error')}"}
            break
        elif result["output"] != first["output"]:
            disagreement = f"two runs disagree: {first['output']:.200} vs {result['output']:.200}"
            first = {"status": "nondeterministic", "error": disagreement}
            break
    first["seconds"] = seconds
    return first, clean_up


def main():
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the host dies: so do we (no orphans outside bubblewrap)
    settings = _read_message(0)
    seccomp = SeccompFilter(bytes.fromhex(settings["seccomp"]))
    tmp = settings["tmp"]
    gc.freeze()  # keep the preloaded heap out of collections so forked children share its pages
    base_address_space = _address_space_bytes()
    _write_message(1, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            job = _read_message(0)
        except EOFError:
            return
        clean_up = None
        try:
            handler = run_repeated if "salts" in job else run_job
            result, clean_up = handler(job, seccomp, tmp, base_address_space)
        except Exception as error:
            result = {"status": "sandbox_error", "error": _describe(error), "seconds": 0.0}
        _write_message(1, result)
        if clean_up is not None:
            clean_up()


if __name__ == "__main__":
    main()
