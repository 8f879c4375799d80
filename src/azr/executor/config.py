"""Configuration of the sandboxed executor and its default ban lists."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

# Modules a proposed program may not import. The first group is the reference implementation's list
# (sources of nondeterminism, concurrency and wall-clock access); the second closes the escape hatches
# that reach the operating system, the interpreter internals or raw memory.
DEFAULT_BANNED_MODULES: tuple[str, ...] = (
    "logging",
    "random",
    "multiprocessing",
    "pebble",
    "subprocess",
    "threading",
    "datetime",
    "time",
    "hashlib",
    "hmac",
    "bcrypt",
    "calendar",
    "os",
    "sys",
    "secrets",
    "uuid",
    "socket",
    "ssl",
    "asyncio",
    "concurrent",
    "signal",
    "resource",
    "ctypes",
    "gc",
    "inspect",
    "importlib",
    "builtins",
    "io",
    "shutil",
    "pathlib",
    "tempfile",
    "glob",
    "pickle",
    "marshal",
    "shelve",
    "sqlite3",
    "pty",
    "fcntl",
    "mmap",
    "posix",
    "nt",
    "code",
    "codeop",
    "runpy",
    "pdb",
    "faulthandler",
    "sysconfig",
    "platform",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "webbrowser",
    "zoneinfo",
)

# Names a program may not use, whether called, read or assigned: code execution, file access,
# interpreter introspection and the dunders used to climb from a literal to `os`.
DEFAULT_BANNED_NAMES: tuple[str, ...] = (
    "eval",
    "exec",
    "compile",
    "open",
    "globals",
    "locals",
    "vars",
    "getattr",
    "setattr",
    "delattr",
    "memoryview",
    "attrgetter",
    "methodcaller",
    "breakpoint",
    "__import__",
    "__builtins__",
    "__loader__",
    "__spec__",
    "__subclasses__",
    "__globals__",
    "__code__",
    "__closure__",
    "__bases__",
    "__base__",
    "__mro__",
    "__class__",
    "__dict__",
    "__getattribute__",
    "__reduce__",
    "__reduce_ex__",
    "__traceback__",
    "__self__",
    "__func__",
    "f_globals",
    "f_locals",
    "f_back",
    "f_builtins",
    "gi_frame",
    "cr_frame",
    "tb_frame",
)


class ExecutorConfig(BaseModel):
    """Limits and policy of an `Executor`. All times are in seconds."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(0, ge=0, description="Warm sandbox workers; 0 means one per usable CPU core.")
    timeout_s: float = Field(10.0, gt=0, description="CPU-time budget of one run of a program.")
    wall_timeout_factor: float = Field(
        3.0, ge=1.0, description="Wall-clock cap of a run as a multiple of timeout_s (sleeping programs)."
    )
    memory_mb: int = Field(1024, ge=32, description="Address space a program may add to the worker's.")
    max_output_chars: int = Field(
        10_000, ge=1, description="Longest accepted output repr; longer outputs are rejected, never cut."
    )
    banned_modules: tuple[str, ...] = Field(
        DEFAULT_BANNED_MODULES,
        description="Modules a proposal may not import or reach (checked on the AST before it runs).",
    )
    banned_names: tuple[str, ...] = Field(
        DEFAULT_BANNED_NAMES, description="Builtins and attributes a proposal may not use (escape hatches)."
    )
    check_determinism: bool = Field(True, description="Validate with two runs in separate processes.")
    require_sandbox: bool = Field(False, description="Refuse to run unless bubblewrap works.")
    use_bwrap: bool = Field(True, description="False skips bubblewrap and uses the weaker fallback.")
    host_grace_s: float = Field(
        5.0, gt=0, description="Extra wait past the wall cap before the host kills a silent worker."
    )
    max_file_mb: int = Field(16, ge=0, description="Largest file a program may write (its private /tmp).")
    tmp_size_mb: int = Field(64, ge=1, description="Size of the worker's private /tmp (bubblewrap only).")

    @property
    def worker_count(self) -> int:
        """The number of workers actually started."""
        return self.workers or len(os.sched_getaffinity(0)) or 1

    @property
    def wall_timeout_s(self) -> float:
        """Wall-clock cap of one run, enforced by the worker that forked it."""
        return self.timeout_s * self.wall_timeout_factor
