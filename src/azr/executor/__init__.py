"""Sandboxed, parallel execution of model-written Python: validation of proposals and answer checks.

    with Executor(ExecutorConfig(workers=0, timeout_s=10.0)) as ex:   # workers=0: one per core
        result = ex.validate("def f(a):\n    return a[::-1]", "'abc'").result()   # ExecResult
        verdict = ex.check_deduction(result.output, "'cba'").result()            # Verdict

Layers, outermost first (each is tested on its own in tests/test_executor_hostile.py):
1. AST check on the host (ast_check.py): syntax, `f` with a parameter, banned modules and names in the
   program and in input/answer expressions. Configurable; `run_tests` skips it (benchmark solutions
   legitimately import sys or os).
2. Bubblewrap per worker (sandbox.py): new user/PID/network/IPC/UTS/mount namespaces, uid 65534, no
   capabilities, read-only /usr and base-Python prefix only (no $HOME, repository, run directory or
   venv), private size-capped /tmp, environment holding only PYTHONHASHSEED=0 and LC_ALL.
   Without bubblewrap: one logged WARNING, then a scrubbed environment and a private directory
   (`require_sandbox=True` refuses instead).
3. Fork per job inside the worker (worker.py): CPU budget (ITIMER_PROF, RLIMIT_CPU behind it), address
   space, file size, descriptors and core limits; stdio on /dev/null; inherited descriptors closed;
   a seccomp filter (seccomp.py) refusing process creation, sockets, signals, ptrace, namespaces,
   mounts and raising limits. The worker enforces the wall-clock cap and kills the child; the host
   kills and replaces a worker that stops answering. Nothing a job does survives it.

Outputs are accepted only as plain data (None, bool, int, float, complex, str, bytes, Ellipsis and
tuples, lists, dicts, sets, frozensets of them; exact types, finite numbers, no cycles) whose repr fits
`max_output_chars`; longer outputs are rejected, never truncated. Answer checks evaluate both sides in
the sandbox, insist on plain data there, compare with == and send back only a verdict.

Known limit: the job's result travels on a pipe inside the child that runs the program. Code that
defeats the AST check and then writes a forged result to that pipe could report a wrong verdict;
it still cannot leave the sandbox.
"""

from azr.executor.config import DEFAULT_BANNED_MODULES, DEFAULT_BANNED_NAMES, ExecutorConfig
from azr.executor.pool import Executor
from azr.executor.results import ExecResult, Status, Verdict
from azr.executor.sandbox import SandboxUnavailableError

__all__ = [
    "DEFAULT_BANNED_MODULES",
    "DEFAULT_BANNED_NAMES",
    "ExecResult",
    "Executor",
    "ExecutorConfig",
    "SandboxUnavailableError",
    "Status",
    "Verdict",
]
