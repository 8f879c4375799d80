"""Hostile and broken programs: each is contained with the right status, the host is left unchanged,
and the pool stays healthy with no stray processes.

Most of these programs are stopped by the AST ban before they run. The same corpus is therefore also
run with the ban lists emptied, so that the runtime layers (bubblewrap, seccomp, rlimits, the worker's
wall-clock kill, fork-per-job) are proven on their own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from azr.executor import Executor, ExecutorConfig, Status

SECRET_ENV = "AZR_TEST_API_TOKEN"
SECRET_VALUE = "hf_do_not_leak_0123456789"
SENTINEL_TEXT = "host secret sentinel"


@dataclass(frozen=True)
class Hostile:
    name: str
    program: str
    banned: Status  # status under the default ban lists
    unbanned: Status  # status with the ban lists off: the sandbox alone must contain it
    error: str = ""  # expected in the error message of the unbanned run
    input_expr: str = "0"


CORPUS = [
    Hostile("infinite_loop", "def f(a):\n    while True:\n        pass", Status.TIMEOUT, Status.TIMEOUT),
    Hostile("c_level_hang", "def f(a):\n    return 10 ** 10 ** 8", Status.TIMEOUT, Status.TIMEOUT),
    Hostile(
        "memory_bomb",
        "def f(a):\n    hoard = []\n    while True:\n        hoard.append(' ' * 10**7)",
        Status.MEMORY,
        Status.MEMORY,
    ),
    Hostile("huge_output", "def f(a):\n    return 'x' * 10**7", Status.BAD_OUTPUT, Status.BAD_OUTPUT),
    Hostile(
        "fork_bomb",
        "import os\ndef f(a):\n    while True:\n        os.fork()",
        Status.BANNED,
        Status.ERROR,
        "PermissionError",
    ),
    Hostile(
        "subprocess",
        "import subprocess\ndef f(a):\n    return subprocess.run(['/usr/bin/id']).returncode",
        Status.BANNED,
        Status.ERROR,
        "PermissionError",
    ),
    Hostile(
        "thread",
        "import threading\ndef f(a):\n    threading.Thread(target=print).start()",
        Status.BANNED,
        Status.ERROR,
        "can't start new thread",
    ),
    Hostile(
        "socket_connect",
        "import socket\ndef f(a):\n    socket.create_connection(('1.1.1.1', 53), timeout=1)",
        Status.BANNED,
        Status.ERROR,
        "PermissionError",
    ),
    Hostile(
        "kill_parent",
        "import os, signal\ndef f(a):\n    os.kill(os.getppid(), signal.SIGKILL)",
        Status.BANNED,
        Status.ERROR,
        "PermissionError",
    ),
    Hostile(
        "kill_everything",
        "import os\ndef f(a):\n    os.kill(-1, 9)",
        Status.BANNED,
        Status.ERROR,
        "PermissionError",
    ),
    Hostile(
        "raise_cpu_limit",
        "import resource\ndef f(a):\n    resource.setrlimit(resource.RLIMIT_CPU, (1000, 1000))",
        Status.BANNED,
        Status.ERROR,
        "Error",
    ),
    Hostile(
        "ignore_cpu_timer",
        "import signal\ndef f(a):\n    signal.signal(signal.SIGPROF, signal.SIG_IGN)\n    while True:\n"
        "        pass",
        Status.BANNED,
        Status.TIMEOUT,
    ),
    Hostile(
        "sleep", "import time\ndef f(a):\n    time.sleep(60)", Status.BANNED, Status.TIMEOUT, "wall-clock"
    ),
    Hostile("sys_exit", "import sys\ndef f(a):\n    sys.exit(3)", Status.BANNED, Status.ERROR, "SystemExit"),
    Hostile(
        "os_exit", "import os\ndef f(a):\n    os._exit(0)", Status.BANNED, Status.ERROR, "before reporting"
    ),
    Hostile(
        "segfault",
        "import ctypes\ndef f(a):\n    return ctypes.string_at(0)",
        Status.BANNED,
        Status.ERROR,
        "SIGSEGV",
    ),
    Hostile(
        "subclass_escape_to_system",
        "def f(a):\n    for c in ().__class__.__base__.__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n            return c.__init__.__globals__['system']('id')",
        Status.BANNED,
        Status.OK,  # system() cannot fork, so the shell never runs; it returns -1
    ),
    Hostile(
        "builtins_escape_to_open",
        "def f(a):\n    return __builtins__['open']('/work/main/pyproject.toml').read()",
        Status.BANNED,
        Status.ERROR,
        "FileNotFoundError",
    ),
]


def descendants(pid: int) -> set[int]:
    """All live descendants of `pid`, from /proc (no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


@pytest.fixture(scope="module")
def host_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HOME with a sentinel file and a secret in the environment, set before any worker starts."""
    home = tmp_path_factory.mktemp("home")
    (home / "sentinel.txt").write_text(SENTINEL_TEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv(SECRET_ENV, SECRET_VALUE)
        yield home


def config(banned: bool) -> ExecutorConfig:
    limits = ExecutorConfig(workers=2, timeout_s=0.5, wall_timeout_factor=4.0, memory_mb=96)
    if banned:
        return limits
    return limits.model_copy(update={"banned_modules": (), "banned_names": ()})


@pytest.fixture(scope="module")
def banned_executor(host_home: Path) -> Iterator[Executor]:
    with Executor(config(banned=True)) as ex:
        yield ex


@pytest.fixture(scope="module")
def open_executor(host_home: Path) -> Iterator[Executor]:
    with Executor(config(banned=False)) as ex:
        yield ex


def run(executor: Executor, program: str, input_expr: str = "0"):  # type: ignore[no-untyped-def]
    return executor.validate(program, input_expr).result(timeout=60)


def test_corpus_is_contained_by_the_ban_and_by_the_sandbox_alone(
    banned_executor: Executor, open_executor: Executor
) -> None:
    baseline = descendants(os.getpid())
    banned = [banned_executor.validate(h.program, h.input_expr) for h in CORPUS]
    unbanned = [open_executor.validate(h.program, h.input_expr) for h in CORPUS]
    for hostile, banned_future, open_future in zip(CORPUS, banned, unbanned, strict=True):
        with_ban, without_ban = banned_future.result(timeout=60), open_future.result(timeout=60)
        assert with_ban.status is hostile.banned, (hostile.name, with_ban)
        assert without_ban.status is hostile.unbanned, (hostile.name, without_ban)
        assert hostile.error in (without_ban.error or ""), (hostile.name, without_ban)
    # The escape reached os.system, but the shell never started.
    escape = unbanned[[h.name for h in CORPUS].index("subclass_escape_to_system")].result()
    assert escape.output is not None and int(escape.output) != 0
    # Every job's process is gone (each is reaped just after its answer): only the workers remain.
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descendants(os.getpid()) == baseline
    for ex in (banned_executor, open_executor):
        assert run(ex, "def f(a):\n    return a + 1", "41").output == "42"


def test_environment_is_scrubbed(open_executor: Executor) -> None:
    result = run(open_executor, "import os\ndef f(a):\n    return dict(os.environ)")
    assert result.ok
    assert SECRET_VALUE not in result.output and SECRET_ENV not in result.output
    assert "PYTHONHASHSEED': '0'" in result.output and "HOME" not in result.output


def test_host_files_are_invisible_and_unchanged(open_executor: Executor, host_home: Path) -> None:
    sentinel = host_home / "sentinel.txt"
    read = run(open_executor, "def f(path):\n    return open(path).read()", repr(str(sentinel)))
    assert read.status is Status.ERROR and "FileNotFoundError" in read.error
    write = run(open_executor, "def f(path):\n    open(path, 'w').write('pwned')", repr(str(sentinel)))
    assert write.status is Status.ERROR
    assert sentinel.read_text() == SENTINEL_TEXT
    listing = run(open_executor, "import os\ndef f(a):\n    return sorted(os.listdir(a))", "'/'")
    assert listing.ok
    for hidden in ("home", "work", "etc", "azr_worker.py" if False else "farm"):
        assert repr(hidden) not in listing.output
    root = run(open_executor, "import os\ndef f(a):\n    return os.listdir('/root')")
    assert root.output == "['.pyenv']"  # only the bound Python prefix, never the rest of $HOME


def test_read_only_system(open_executor: Executor) -> None:
    result = run(open_executor, "def f(a):\n    open('/usr/azr_pwned', 'w')")
    assert result.status is Status.ERROR and ("OSError" in result.error or "Permission" in result.error)
    assert not Path("/usr/azr_pwned").exists()


def test_other_processes_are_invisible(open_executor: Executor) -> None:
    program = "import os\ndef f(host_pid):\n    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
    program += "    return len(pids), str(host_pid) in pids"
    result = run(open_executor, program, str(os.getpid()))
    assert result.output == "(3, False)"  # the sandbox's init, the worker and the job itself


def test_runs_as_an_unprivileged_user(open_executor: Executor) -> None:
    result = run(open_executor, "import os\ndef f(a):\n    return (os.getuid(), os.getgid())")
    assert result.output == "(65534, 65534)"


def test_files_do_not_leak_between_jobs(open_executor: Executor) -> None:
    write = (
        "def f(a):\n    open('/tmp/leak', 'w').write('x')\n    open('leak_cwd', 'w').write('x')\n    return 1"
    )
    assert run(open_executor, write).ok
    read = "import os\ndef f(a):\n    return os.path.exists('/tmp/leak') or os.path.exists('leak_cwd')"
    # Enough reads that every worker serves at least one of them.
    assert {run(open_executor, read).output for _ in range(4)} == {"False"}


def test_poisoned_builtins_do_not_reach_the_result_or_the_next_job(open_executor: Executor) -> None:
    poison = (
        "import builtins\ndef f(a):\n    builtins.len = lambda x: 42\n    builtins.repr = lambda x: 'gold'\n"
        "    return a"
    )
    assert run(open_executor, poison, "[1, 2]").output == "[1, 2]"
    assert {run(open_executor, "def f(a):\n    return len(a)", "[1, 2]").output for _ in range(4)} == {"2"}


def test_a_killed_worker_is_replaced_without_losing_the_batch() -> None:
    with Executor(ExecutorConfig(workers=2, timeout_s=1)) as ex:
        victim = ex.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        futures = [ex.validate("def f(a):\n    return a * 2", str(i)) for i in range(20)]
        assert [future.result(timeout=60).output for future in futures] == [str(2 * i) for i in range(20)]
        assert victim not in ex.worker_pids()


def test_a_wedged_worker_is_killed_by_the_host_watchdog() -> None:
    settings = ExecutorConfig(workers=1, timeout_s=0.2, wall_timeout_factor=1.0, host_grace_s=0.5)
    with Executor(settings) as ex:
        (worker,) = ex.worker_pids()
        for pid in descendants(worker):  # freeze the in-sandbox worker: it can no longer answer
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        frozen = ex.validate("def f(a):\n    return a", "1").result(timeout=60)
        assert frozen.status is Status.TIMEOUT and time.monotonic() - started < 5
        assert ex.validate("def f(a):\n    return a", "2").result(timeout=60).output == "2"


def test_no_process_outlives_the_executor(host_home: Path) -> None:
    before = descendants(os.getpid())
    ex = Executor(config(banned=False))
    futures = [ex.validate(h.program, h.input_expr) for h in CORPUS[:4]]
    ex.close()  # closing with jobs done or in flight must still reap everything
    assert all(future.done() for future in futures)
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert descendants(os.getpid()) - before == set()
