"""Errors about models. Every message is one actionable line: the CLI prints it without a traceback."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class ModelInstallError(ModelLoadError):
    """A named model could not be installed (download failed, or the assembled file failed its check)."""
