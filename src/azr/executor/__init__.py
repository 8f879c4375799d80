"""Sandboxed, parallel execution of model-written Python: validation of proposals and answer checks."""

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
