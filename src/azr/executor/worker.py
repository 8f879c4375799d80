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
_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class BadOutput(Exception):
    """The value cannot serve as a gold answer (not plain data, not finite, or too long)."""


def _prctl(option, arg2, arg3=0):
    if _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _load_seccomp(filter_bytes):
    if not filter_bytes:
        return
    buffer = ctypes.create_string_buffer(filter_bytes, _len(filter_bytes))
    program = _SockFprog(_len(filter_bytes) // 8, ctypes.addressof(buffer))
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(program))


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
    data = json.dumps(message).encode()
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


def _perturb_heap():
    # Forked children share the worker's heap layout, so `id(object())` would repeat across two runs
    # in the same worker and hide nondeterminism. Shift each small-object size class and the malloc
    # heap by a random amount; the objects stay alive until the child exits.
    seed = os.urandom(40)
    keep = [bytes(size) for index, size in enumerate(range(1, 513, 16)) for _ in range(seed[index] % 48)]
    keep.append(bytearray(4096 + 64 * seed[32]))
    keep.extend(object() for _ in range(seed[33] % 64))
    return keep


def _child(job, result_fd, filter_bytes):
    """Run one job in the forked child and never return."""
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The profiling timer enforces the exact CPU budget (SIGPROF terminates); RLIMIT_CPU, in whole
        # seconds and beyond the program's reach (setrlimit is denied by seccomp), backs it up.
        signal.setitimer(signal.ITIMER_PROF, job["cpu_s"])
        cpu = math.ceil(job["cpu_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
        address_space = pages * os.sysconf("SC_PAGE_SIZE") + job["memory_mb"] * 1024 * 1024
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
        _load_seccomp(filter_bytes)
        keep_alive = _perturb_heap()  # noqa: F841
    except BaseException as error:
        _write_all(result_fd, json.dumps({"status": "sandbox_error", "error": _describe(error)}).encode())
        os._exit(0)
    try:
        result = _JOBS[job["kind"]](job)
    except BadOutput as error:
        result = {"status": "bad_output", "error": str(error)[:_MAX_ERROR_CHARS]}
    except MemoryError:
        result = {"status": "memory", "error": "MemoryError"}
    except BaseException as error:  # SystemExit and KeyboardInterrupt are program errors too
        result = {"status": "error", "error": _describe(error)}
    try:
        data = json.dumps(result).encode()
    except BaseException as error:
        data = json.dumps({"status": "sandbox_error", "error": _describe(error)}).encode()
    _write_all(result_fd, data)
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


def _clear_tmp(path):
    for name in os.listdir(path):
        target = os.path.join(path, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(target)


def run_job(job, filter_bytes, tmp):
    """Fork a child for `job`, wait for its result under the wall-clock deadline and return it.

    `tmp` is the worker's private scratch directory; the child starts in a fresh directory inside it
    and everything the job wrote there is removed before the next job.
    """
    started = time.monotonic()
    job_dir = os.path.join(tmp, "job")
    os.makedirs(job_dir, exist_ok=True)
    job["cwd"] = job_dir
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(job, write_fd, filter_bytes)
    os.close(write_fd)
    deadline = started + job["wall_s"]
    chunks, size, timed_out = [], 0, False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        size += _len(chunk)
        if size > _MAX_RESULT_BYTES:  # only a misbehaving child writes this much to the result pipe
            break
        chunks.append(chunk)
    os.close(read_fd)
    if timed_out or size > _MAX_RESULT_BYTES:
        os.kill(pid, signal.SIGKILL)
    _, wait_status, rusage = os.wait4(pid, 0)
    _clear_tmp(tmp)
    if timed_out:
        result = {"status": "timeout", "error": f"wall-clock limit of {job['wall_s']:g} s exceeded"}
    else:
        try:
            result = json.loads(b"".join(chunks)) if chunks else None
        except ValueError:
            result = None
        if not isinstance(result, dict) or "status" not in result:
            result = _outcome_of_exit(wait_status, rusage, job["cpu_s"])
    result["seconds"] = time.monotonic() - started
    return result


def main():
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the host dies: so do we (no orphans outside bubblewrap)
    settings = _read_message(0)
    filter_bytes = bytes.fromhex(settings["seccomp"])
    tmp = settings["tmp"]
    gc.freeze()  # keep the preloaded heap out of collections so forked children share its pages
    _write_message(1, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            job = _read_message(0)
        except EOFError:
            return
        try:
            result = run_job(job, filter_bytes, tmp)
        except Exception as error:
            result = {"status": "sandbox_error", "error": _describe(error), "seconds": 0.0}
        _write_message(1, result)


if __name__ == "__main__":
    main()
