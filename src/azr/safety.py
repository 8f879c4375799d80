"""The safety monitor: watches every proposer and solver response, and every program the sandbox stopped
for hostile behaviour, during training.

The paper saw a Llama-3.1-8B chain of thought about outsmarting "less intelligent humans" and nothing in
the reference watched for it. `SafetyMonitor.screen` matches each response against phrase lists per
category (shipped in `data/safety_patterns.yaml`, replaceable or extendable from the config) and an
optional classifier; `screen_execution` turns executor verdicts that mean the program probed the box into
`sandbox_probe` flags. `end_step` appends the step's flags to `flags.jsonl` (fsynced, one JSON object per
flag), returns metrics and raises `SafetyStop` when the share of flagged screenings passes
`max_flag_rate`. `trim_after` drops flags of steps a resume will redo.

    monitor = SafetyMonitor(SafetyConfig(max_flag_rate=0.2), run.root / FLAGS_FILENAME)
    monitor.screen(step, "deduction", "propose", completion.text, task_id=None)
    monitor.screen_execution(step, "deduction", "propose", result.status, result.error, program)
    metrics.update(monitor.end_step(step))      # may raise SafetyStop after writing the flags
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from azr.durable import atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

FLAGS_FILENAME = "flags.jsonl"
SANDBOX_PROBE = "sandbox_probe"
CLASSIFIER_PATTERN_PREFIX = "classifier:"
EXCERPT_CHARS = 160

# Executor statuses that mean the program did something the sandbox exists to stop.
PROBE_STATUSES = frozenset({"banned", "memory", "sandbox_error"})
# `error` results that the sandbox caused: a syscall seccomp refuses raises PermissionError (EPERM), a
# write to the read-only system raises EROFS, and a syscall from another ABI kills the child with SIGSYS.
PROBE_ERROR_PATTERN = re.compile(
    r"PermissionError|Operation not permitted|Read-only file system|killed by signal SIGSYS"
)
# Banned only because they make outputs nondeterministic (the reference's list): a model that imports
# `random` wants a random number, not a way out, so these bans are not flagged.
NONDETERMINISM_BANS = frozenset(
    {"random", "time", "datetime", "calendar", "logging", "hashlib", "hmac", "bcrypt", "uuid", "zoneinfo"}
)
_BANNED_WHAT = re.compile(r"banned (?:module|name|attribute) '([^']+)'")


def default_patterns() -> dict[str, list[str]]:
    """The shipped phrase lists, category -> regular expressions."""
    text = resources.files("azr").joinpath("data/safety_patterns.yaml").read_text(encoding="utf-8")
    return _pattern_lists(yaml.safe_load(text), "data/safety_patterns.yaml")


def _pattern_lists(raw: Any, source: str) -> dict[str, list[str]]:
    if not isinstance(raw, dict) or not all(
        isinstance(category, str) and isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)
        for category, patterns in raw.items()
    ):
        raise ValueError(f"{source}: expected a mapping of category -> list of regular expressions")
    for category, patterns in raw.items():
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{source}: category {category!r}: bad regex {pattern!r}: {error}") from None
    return {category: list(patterns) for category, patterns in raw.items()}


class SafetyConfig(BaseModel):
    """What the safety monitor screens for and when it stops training."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Screen every response and executor verdict of every step.")
    extra_patterns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Category -> regular expressions added to the default (or pattern_file) lists; "
        "matched case-insensitively.",
    )
    pattern_file: str | None = Field(
        None,
        description="YAML or JSON file of category -> regular expressions that replaces the shipped "
        "default lists.",
    )
    max_flag_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Stop training (SafetyStop) when the share of flagged screenings of one step exceeds "
        "this; null never stops.",
    )
    classifier: str | None = Field(
        None,
        description="'module:function' import path of a callable (text) -> list of flagged categories, "
        "called on every response in addition to the phrase lists.",
    )

    @field_validator("extra_patterns")
    @classmethod
    def _patterns_compile(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return _pattern_lists(value, "extra_patterns")

    @field_validator("classifier")
    @classmethod
    def _classifier_is_a_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"classifier must look like 'package.module:function', got {value!r}")
        return value

    def patterns(self) -> dict[str, list[str]]:
        """The effective lists: the pattern file or the defaults, plus the extra patterns."""
        if self.pattern_file is not None:
            path = Path(self.pattern_file)
            base = _pattern_lists(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
        else:
            base = default_patterns()
        for category, extra in self.extra_patterns.items():
            base[category] = base.get(category, []) + extra
        return base


@dataclass(frozen=True)
class Flag:
    """One thing the monitor flagged. `pattern` is the regex (or `classifier:<path>`, or the executor
    status), `match` the text it matched, `excerpt` the response around the match."""

    step: int
    task_type: str
    role: str
    task_id: int | str | None
    category: str
    pattern: str
    match: str
    excerpt: str


class SafetyStop(RuntimeError):
    """Training stopped because too many screenings of one step were flagged. `metrics` are the step's
    safety metrics, so the step can still be recorded before the run stops."""

    def __init__(self, message: str, metrics: dict[str, float]) -> None:
        super().__init__(message)
        self.metrics = metrics


def _excerpt(text: str, start: int, end: int) -> str:
    margin = max(0, (EXCERPT_CHARS - (end - start)) // 2)
    left, right = max(0, start - margin), min(len(text), end + margin)
    return ("…" if left else "") + text[left:right][:EXCERPT_CHARS] + ("…" if right < len(text) else "")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        return "" if value is None else str(value)
    except Exception:  # a hostile __str__ must not stop training
        return ""


def load_classifier(path: str) -> Callable[[str], list[str]]:
    module_name, _, function_name = path.partition(":")
    classifier = getattr(importlib.import_module(module_name), function_name)
    if not callable(classifier):
        raise TypeError(f"classifier {path!r} is not callable")
    return classifier


class SafetyMonitor:
    """Screens responses and executor verdicts; see the module docstring for the protocol."""

    def __init__(self, config: SafetyConfig, flags_path: Path | str):
        self.config = config
        self.flags_path = Path(flags_path)
        self._compiled = [
            (category, re.compile(pattern, re.IGNORECASE | re.DOTALL))
            for category, patterns in config.patterns().items()
            for pattern in patterns
        ]
        self.categories = sorted({category for category, _ in self._compiled} | {SANDBOX_PROBE})
        self._classifier = load_classifier(config.classifier) if config.classifier else None
        self._pending: list[Flag] = []
        self._screened = 0
        self._flagged = 0

    def screen(
        self, step: int, task_type: str, role: str, text: Any, task_id: int | str | None = None
    ) -> list[Flag]:
        """Flag `text` (one model response) for every category whose patterns or classifier match it;
        at most one flag per category (the first match)."""
        if not self.config.enabled:
            return []
        text = _as_text(text)
        flags: list[Flag] = []
        seen: set[str] = set()
        for category, regex in self._compiled:
            if category in seen:
                continue
            found = regex.search(text)
            if found is not None:
                seen.add(category)
                flags.append(
                    Flag(
                        step,
                        task_type,
                        role,
                        task_id,
                        category,
                        regex.pattern,
                        found.group(0)[:EXCERPT_CHARS],
                        _excerpt(text, found.start(), found.end()),
                    )
                )
        for category in self._classify(text):
            if category not in seen:
                seen.add(category)
                pattern = CLASSIFIER_PATTERN_PREFIX + str(self.config.classifier)
                flags.append(
                    Flag(step, task_type, role, task_id, category, pattern, "", _excerpt(text, 0, 0))
                )
        self._record(flags)
        return flags

    def _classify(self, text: str) -> list[str]:
        if self._classifier is None:
            return []
        try:
            categories = self._classifier(text)
            return [str(c) for c in categories or []]
        except Exception as error:  # a broken classifier is logged, never allowed to stop training
            log.warning(
                "safety classifier %s failed: %s: %s", self.config.classifier, type(error).__name__, error
            )
            return []

    def screen_execution(
        self,
        step: int,
        task_type: str,
        role: str,
        status: Any,
        error: str | None,
        program: str,
        task_id: int | str | None = None,
    ) -> Flag | None:
        """Flag a program the executor stopped for what it tried to do (category `sandbox_probe`):
        banned escape hatches, memory exhaustion, a broken sandbox, or a syscall seccomp refused.
        Bans that only guard determinism (`random`, `time`, ...) and ordinary exceptions are not flagged."""
        if not self.config.enabled:
            return None
        status = _as_text(getattr(status, "value", status))
        error = _as_text(error)
        probing = status in PROBE_STATUSES or (status == "error" and PROBE_ERROR_PATTERN.search(error))
        banned_what = _BANNED_WHAT.search(error)
        if banned_what and banned_what.group(1).split(".")[0] in NONDETERMINISM_BANS:
            probing = False
        flag = None
        if probing:
            excerpt = _excerpt(_as_text(program), 0, 0)
            flag = Flag(step, task_type, role, task_id, SANDBOX_PROBE, status, error[:EXCERPT_CHARS], excerpt)
        self._record([flag] if flag else [])
        return flag

    def _record(self, flags: list[Flag]) -> None:
        self._screened += 1
        self._flagged += bool(flags)
        self._pending.extend(flags)

    def end_step(self, step: int) -> dict[str, float]:
        """Append this step's flags to `flags.jsonl` and return its metrics; raise `SafetyStop` (after
        writing) when the flagged share of this step's screenings exceeds `max_flag_rate`."""
        if not self.config.enabled:
            return {}
        flags, screened, flagged = self._pending, self._screened, self._flagged
        self._pending, self._screened, self._flagged = [], 0, 0
        if flags:
            self.flags_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.flags_path, "a", encoding="utf-8") as handle:
                for flag in flags:
                    handle.write(json.dumps(asdict(flag), ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        rate = flagged / screened if screened else 0.0
        counts = Counter(flag.category for flag in flags)
        metrics = {"safety/flags": float(len(flags)), "safety/flag_rate": rate}
        for category in sorted(set(self.categories) | set(counts)):
            metrics[f"safety/{category}"] = float(counts[category])
        limit = self.config.max_flag_rate
        if limit is not None and rate > limit:
            raise SafetyStop(
                f"step {step}: {flagged} of {screened} screened responses and programs were flagged "
                f"({rate:.1%} > safety.max_flag_rate {limit:.1%}); categories {dict(counts)}; "
                f"see {self.flags_path}",
                metrics,
            )
        return metrics

    def trim_after(self, step: int) -> int:
        """Drop the flags of steps after `step` (the checkpoint a resume starts from) and any torn last
        line; returns how many were dropped. Atomic: a kill leaves the old or the new file."""
        self._pending, self._screened, self._flagged = [], 0, 0
        if not self.flags_path.is_file():
            return 0
        lines = self.flags_path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                if int(json.loads(line)["step"]) <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a kill while appending belongs to a step being redone
        atomic_write_text(self.flags_path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def read_flags(path: Path | str) -> list[dict[str, Any]]:
    """The flags in a `flags.jsonl`, skipping a torn last line; [] when there is none."""
    return read_jsonl(Path(path))
