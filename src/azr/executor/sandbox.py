"""How a worker process is launched: under bubblewrap when it works, else the strongest fallback.

Under bubblewrap the worker sees a read-only /usr and the base Python prefix only (not $HOME, the
repository, the run directory or the virtual environment), a private /tmp, /proc of its own PID
namespace, no network, no capabilities, an unprivileged uid and an environment holding nothing but
PYTHONHASHSEED. The fallback keeps what needs no privileges: a scrubbed environment, a private
temporary working directory, and the rlimits and seccomp filter the worker applies to every job.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from azr.executor.seccomp import SeccompUnsupportedError, build_filter

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
_SANDBOX_WORKER_PATH = "/azr_worker.py"
_SANDBOX_TMP = "/tmp"
_UNPRIVILEGED_ID = "65534"  # "nobody"
# Python flags: no site (no user or venv packages), no user site, no bytecode writes, no script dir on
# sys.path. Not -I/-E: those would ignore PYTHONHASHSEED, which must stay fixed for reproducible sets.
PYTHON_FLAGS = ("-S", "-s", "-B", "-P")
_HASH_SEED = "0"


class SandboxUnavailableError(RuntimeError):
    """Bubblewrap is required by the configuration but cannot start a sandbox on this machine."""


@dataclass
class WorkerLaunch:
    """Everything needed to start one worker process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    tmp: str  # the worker's scratch directory, as seen from inside the worker
    sandboxed: bool
    owned_dir: str | None = field(default=None)  # host directory to delete when the worker is gone


def base_python() -> tuple[Path, Path]:
    """The base interpreter (never the virtual environment's) and the prefix it lives under."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in (f"python{version}", "python3"):
        candidate = prefix / "bin" / name
        if candidate.exists():
            return candidate, prefix
    raise SandboxUnavailableError(f"no Python interpreter found under {prefix}/bin")


def bwrap_argv(tmp_size_mb: int) -> list[str]:
    """The bubblewrap command line that runs the worker script (without the interpreter part)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError("bubblewrap (bwrap) is not installed")
    _, prefix = base_python()
    argv = [
        bwrap,
        "--unshare-all",  # network, PID, IPC, UTS, cgroup and mount namespaces
        "--unshare-user",
        "--uid", _UNPRIVILEGED_ID,
        "--gid", _UNPRIVILEGED_ID,
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for merged in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / merged
        if target.is_symlink():
            argv += ["--symlink", str(target.readlink()), str(target)]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), str(target)]
    if not prefix.is_relative_to("/usr"):
        argv += ["--ro-bind", str(prefix), str(prefix)]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(tmp_size_mb * 1024 * 1024),
        "--tmpfs", _SANDBOX_TMP,
        "--ro-bind", str(WORKER_SCRIPT), _SANDBOX_WORKER_PATH,
        "--setenv", "PYTHONHASHSEED", _HASH_SEED,
        "--setenv", "LC_ALL", "C.UTF-8",
        "--chdir", _SANDBOX_TMP,
    ]  # fmt: skip
    return argv


@functools.cache
def probe_bwrap(tmp_size_mb: int) -> str | None:
    """Start one throwaway sandbox; return None when it works, else the reason it does not."""
    try:
        python, _ = base_python()
        argv = [*bwrap_argv(tmp_size_mb), str(python), *PYTHON_FLAGS, "-c", "pass"]
    except SandboxUnavailableError as error:
        return str(error)
    try:
        completed = subprocess.run(argv, capture_output=True, timeout=30, env={}, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap failed to start: {error}"
    if completed.returncode != 0:
        detail = completed.stderr.decode(errors="replace").strip()[-300:]
        return f"bubblewrap failed to start (exit {completed.returncode}): {detail}"
    return None


@functools.cache
def _warn_unsandboxed(reason: str) -> None:
    # functools.cache makes this a warn-once per reason and process.
    logger.warning(
        "azr executor: bubblewrap sandbox unavailable (%s). Falling back to WEAKER isolation: scrubbed "
        "environment, rlimits, seccomp and a private working directory, but the program can read the "
        "host file system. Set require_sandbox=True to refuse instead.",
        reason,
    )


def resolve_sandboxed(tmp_size_mb: int, require_sandbox: bool, use_bwrap: bool = True) -> bool:
    """Whether workers run under bubblewrap; warns once (or raises) when they cannot."""
    reason = probe_bwrap(tmp_size_mb) if use_bwrap else "use_bwrap is off in the configuration"
    if reason is None:
        return True
    if require_sandbox:
        raise SandboxUnavailableError(f"require_sandbox is set but the sandbox cannot run: {reason}")
    _warn_unsandboxed(reason)
    return False


def worker_launch(sandboxed: bool, tmp_size_mb: int) -> WorkerLaunch:
    """How to start one worker; the fallback gets a fresh private directory per worker."""
    python, _ = base_python()
    if sandboxed:
        argv = [*bwrap_argv(tmp_size_mb), str(python), *PYTHON_FLAGS, _SANDBOX_WORKER_PATH]
        return WorkerLaunch(argv=argv, env={}, cwd="/", tmp=_SANDBOX_TMP, sandboxed=True)
    scratch = tempfile.mkdtemp(prefix="azr-worker-")
    env = {"PYTHONHASHSEED": _HASH_SEED, "LC_ALL": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch}
    argv = [str(python), *PYTHON_FLAGS, str(WORKER_SCRIPT)]
    return WorkerLaunch(argv=argv, env=env, cwd=scratch, tmp=scratch, sandboxed=False, owned_dir=scratch)


def seccomp_filter(require_sandbox: bool) -> bytes:
    """The seccomp filter for this machine; empty (with a warning, or an error) where none can be built."""
    try:
        return build_filter()
    except SeccompUnsupportedError as error:
        if require_sandbox:
            raise SandboxUnavailableError(f"require_sandbox is set but {error}") from None
        _warn_unsandboxed(f"{error}: jobs run without a seccomp filter")
        return b""
