"""Versioned prompt templates (`r1`, `completion`) and the rules that read answers back."""

from azr.prompts.formats import (
    FORMATS,
    CompletionFormat,
    PromptFormat,
    R1Format,
    get_format,
    latest_version,
    versions,
)

__all__ = [
    "FORMATS",
    "CompletionFormat",
    "PromptFormat",
    "R1Format",
    "get_format",
    "latest_version",
    "versions",
]
