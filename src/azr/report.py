"""`azr report`: one static HTML page with PNG figures that shows what self-play did in a run.

Everything comes from the run directory, read-only, so a run still training can be reported on:
metrics.jsonl (curves), samples/step_N.jsonl (learnability distribution, gallery), buffers.sqlite
(complexity and diversity of the programs each step added) and flags.jsonl (safety monitor). Every
section degrades to a "no data" note when its inputs are missing. Model-written text is untrusted: the
template autoescapes everything, and the page loads nothing but the PNGs beside it.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import typer
import yaml

from azr.durable import read_jsonl
from azr.program_metrics import answer_spread, complexity, mean_distance_to_references
from azr.run_dir import RunDir
from azr.safety import FLAGS_FILENAME, read_flags
from azr.task_browser import BUFFER_FILENAME, BufferTask, read_tasks

ROLES = ("propose", "solve")
# Tree edit distance is at least quadratic in program size (~0.06 s a pair of 100-node programs):
# measure a few programs per step on at most this many steps, always including the first and last.
DIVERSITY_PROGRAMS_PER_STEP = 2
DIVERSITY_REFERENCES = 3
DIVERSITY_MAX_STEPS = 20
GALLERY_TEXT_CHARS = 3000
SAMPLES_PATTERN = re.compile(r"^step_(\d+)\.jsonl$")

Series = list[tuple[int, float]]


@dataclass
class RunData:
    """What the report reads, each piece empty when its file is missing or unreadable."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    tasks: list[BufferTask] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path) -> RunData:
        run = RunDir(root)
        data = cls(run.root)
        try:
            data.config = yaml.safe_load(run.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            data.problems.append(f"config.yaml unreadable: {error}")
        data.metrics = [
            r for r in run.read_metrics() if isinstance(r, dict) and isinstance(r.get("step"), int)
        ]
        if run.samples_dir.is_dir():
            for path in sorted(run.samples_dir.iterdir()):
                match = SAMPLES_PATTERN.match(path.name)
                if match:
                    data.samples[int(match.group(1))] = _read_jsonl(path)
        try:
            data.tasks = read_tasks(run.root / BUFFER_FILENAME)
        except FileNotFoundError:
            pass
        except Exception as error:  # a locked or corrupt database must not cost the rest of the report
            data.problems.append(f"buffers.sqlite unreadable: {type(error).__name__}: {error}")
        data.flags = read_flags(run.root / FLAGS_FILENAME)
        return data

    def series(self, key: str) -> Series:
        return [
            (record["step"], float(record[key])) for record in self.metrics if _is_number(record.get(key))
        ]

    def keys(self, prefix: str) -> list[str]:
        return sorted({key for record in self.metrics for key in record if key.startswith(prefix)})

    def task_types(self) -> list[str]:
        configured = (self.config.get("selfplay") or {}).get("task_types")
        if isinstance(configured, list) and configured:
            return [str(name) for name in configured]
        found = {key.split("/")[1] for key in self.keys("reward/") if key.count("/") == 2}
        return sorted(found | {task.task_type for task in self.tasks})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A samples file of a run that may still be writing; unreadable counts as empty."""
    try:
        return read_jsonl(path)
    except OSError:
        return []


# figures


@dataclass
class Panel:
    title: str
    ylabel: str
    lines: dict[str, Series] = field(default_factory=dict)
    histogram: dict[str, list[float]] | None = None

    @property
    def has_data(self) -> bool:
        if self.histogram is not None:
            return any(self.histogram.values())
        return any(self.lines.values())


def _plot(path: Path, panels: list[Panel]) -> bool:
    """Draw the panels side by side into `path`; False (and no file) when none has data."""
    if not any(panel.has_data for panel in panels):
        path.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        axis.set_title(panel.title, fontsize=10)
        axis.set_ylabel(panel.ylabel)
        axis.grid(alpha=0.3)
        if not panel.has_data:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes, color="gray")
            continue
        if panel.histogram is not None:
            values = {label: v for label, v in panel.histogram.items() if v}
            axis.hist(list(values.values()), bins=10, range=(0.0, 1.0), label=list(values), stacked=True)
            axis.set_xlabel("solve rate of a valid proposal")
        else:
            for label, series in panel.lines.items():
                if series:
                    steps, values = zip(*series, strict=True)
                    axis.plot(steps, values, marker="o" if len(series) < 30 else None, ms=3, label=label)
            axis.set_xlabel("step")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _by_step(tasks: Iterable[BufferTask]) -> dict[int, list[BufferTask]]:
    grouped: dict[int, list[BufferTask]] = defaultdict(list)
    for task in tasks:
        grouped[task.step].append(task)
    return dict(sorted(grouped.items()))


def _spaced(steps: list[int], limit: int) -> list[int]:
    if len(steps) <= limit:
        return steps
    return sorted({steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)})


def program_panels(data: RunData) -> tuple[list[Panel], list[Panel]]:
    """Complexity and diversity of the programs each step added to each buffer."""
    nodes, cyclomatic = (
        Panel("AST nodes of new programs (mean)", "nodes"),
        Panel("cyclomatic complexity of new programs (mean)", "radon total"),
    )
    distance = Panel("AST edit distance of new programs to the buffer before them", "mean distance")
    spread = Panel("answer spread of new tasks", "distinct outputs / tasks")
    for task_type in data.task_types():
        steps = _by_step(t for t in data.tasks if t.task_type == task_type)
        for step, tasks in steps.items():
            measured = [c for c in (complexity(t.program) for t in tasks) if c is not None]
            if measured:
                nodes.lines.setdefault(task_type, []).append(
                    (step, sum(c.ast_nodes for c in measured) / len(measured))
                )
                cyclomatic.lines.setdefault(task_type, []).append(
                    (step, sum(c.cyclomatic for c in measured) / len(measured))
                )
            outputs = [json.dumps(t.outputs) if t.inputs else t.output for t in tasks]
            value = answer_spread(outputs)
            if value is not None:
                spread.lines.setdefault(task_type, []).append((step, value))
        earlier: list[str] = []
        for step, tasks in steps.items():
            programs = [t.program for t in tasks]
            if step in _spaced(list(steps), DIVERSITY_MAX_STEPS):
                rng = random.Random(f"{task_type}/{step}")
                chosen = rng.sample(programs, min(DIVERSITY_PROGRAMS_PER_STEP, len(programs)))
                # The first step (the seed set) has no earlier buffer: it is compared within itself.
                value = mean_distance_to_references(chosen, earlier or programs, rng, DIVERSITY_REFERENCES)
                if value is not None:
                    distance.lines.setdefault(task_type, []).append((step, value))
            earlier += programs
    return [nodes, cyclomatic], [distance, spread]


@dataclass
class Section:
    title: str
    description: str
    figure: str | None = None
    table: list[tuple[str, ...]] | None = None


def _type_role_panels(data: RunData, prefix: str, ylabel: str) -> list[Panel]:
    return [
        Panel(
            f"{prefix}<type>/{role}",
            ylabel,
            {t: data.series(f"{prefix}{t}/{role}") for t in data.task_types()},
        )
        for role in ROLES
    ]


def figure_sections(data: RunData, out: Path) -> list[Section]:
    """Every section of the report with its figure (None where there is nothing to plot)."""

    def figure(name: str, panels: list[Panel]) -> str | None:
        return name if _plot(out / name, panels) else None

    return [
        *_learning_sections(data, figure),
        *_program_sections(data, figure),
        _safety_section(data, figure),
    ]


def _learning_sections(data: RunData, figure: Callable[[str, list[Panel]], str | None]) -> list[Section]:
    """Rewards, advantages, rates, learnability and buffer sizes per task type."""
    types = data.task_types()

    proposals = [s for step in sorted(data.samples) for s in data.samples[step] if s.get("role") == "propose"]
    solve_rates = {
        t: [
            float(s["solve_rate"])
            for s in proposals
            if s.get("task_type") == t and _is_number(s.get("solve_rate"))
        ]
        for t in types
    }

    def per_type(key: str, title: str, ylabel: str) -> Panel:
        return Panel(title, ylabel, {t: data.series(key.format(t)) for t in types})

    return [
        Section(
            "Rewards",
            "Mean reward per (task type, role) and step: learnability for proposers, correctness for "
            "solvers, format penalties included.",
            figure("rewards.png", _type_role_panels(data, "reward/", "mean reward")),
        ),
        Section(
            "Advantage magnitude",
            "Mean |A| of each (type, role) group after TRR++ normalisation (metric "
            "advantage_abs/<type>/<role>); 0 means every reward in the group was equal and the group "
            "taught nothing that step.",
            figure("advantages.png", _type_role_panels(data, "advantage_abs/", "mean |advantage|")),
        ),
        Section(
            "Valid proposals and solve rates",
            "Share of proposals the executor accepted, and share of solver answers judged correct.",
            figure(
                "rates.png",
                [
                    per_type("valid_rate/{}", "valid-proposal rate", "share"),
                    per_type("solve_rate/{}", "solve rate", "share"),
                ],
            ),
        ),
        Section(
            "Learnability",
            "Mean learnability-estimate solve rate of the valid proposals per step, and the distribution of "
            "per-proposal solve rates over the saved proposer samples (0 and 1 give no proposer reward).",
            figure(
                "learnability.png",
                [
                    per_type("learnability/{}", "learnability/<type>", "mean solve rate"),
                    Panel("per-proposal solve rate (samples)", "proposals", histogram=solve_rates),
                ],
            ),
        ),
        Section(
            "Buffer sizes",
            "Tasks in each buffer after each step.",
            figure("buffers.png", [per_type("buffer/{}", "buffer/<type>", "tasks")]),
        ),
    ]


def _program_sections(data: RunData, figure: Callable[[str, list[Panel]], str | None]) -> list[Section]:
    """Program complexity and diversity, validation scores and time per phase."""
    complexity_panels, diversity_panels = program_panels(data)

    def every(prefix: str, title: str, ylabel: str) -> Panel:
        return Panel(title, ylabel, {k.removeprefix(prefix): data.series(k) for k in data.keys(prefix)})

    return [
        Section(
            "Program complexity",
            "Programs added to each buffer at each step (step 0: the seed tasks): AST node count and "
            "cyclomatic complexity (radon), averaged.",
            figure("complexity.png", complexity_panels),
        ),
        Section(
            "Program diversity",
            f"AST edit distance (APTED, node labels = AST class) of up to "
            f"{DIVERSITY_PROGRAMS_PER_STEP} programs added at a step to {DIVERSITY_REFERENCES} programs "
            f"drawn from the same buffer as it stood before that step, which is where proposer references "
            f"come from (the prompts themselves are saved for a few samples only); the seed step is "
            f"compared within the seed set; at most {DIVERSITY_MAX_STEPS} steps are measured. Answer "
            f"spread: distinct outputs over the tasks added at that step.",
            figure("diversity.png", diversity_panels),
        ),
        Section(
            "In-training validation",
            "Scores of the benchmarks run every eval.every_steps steps (eval/<bench>).",
            figure("eval.png", [every("eval/", "eval/<bench>", "score")]),
        ),
        Section(
            "Time per phase",
            "Seconds spent in each phase of a step (time/<phase>).",
            figure("time.png", [every("time/", "time/<phase>", "seconds")]),
        ),
    ]


def _safety_section(data: RunData, figure: Callable[[str, list[Panel]], str | None]) -> Section:
    """Flags per category and step, and the last 50 flags."""
    return Section(
        "Safety monitor",
        "Responses and programs flagged by the safety monitor (safety/<category>), see flags.jsonl.",
        figure(
            "safety.png",
            [
                Panel(
                    "safety/<category> and safety/flags",
                    "flags",
                    {
                        k.removeprefix("safety/"): data.series(k)
                        for k in data.keys("safety/")
                        if k != "safety/flag_rate"
                    },
                ),
                Panel("safety/flag_rate", "flagged share", {"flag rate": data.series("safety/flag_rate")}),
            ],
        ),
        table=[
            (
                str(flag.get("step")),
                str(flag.get("task_type")),
                str(flag.get("role")),
                str(flag.get("category")),
                str(flag.get("match")),
                str(flag.get("excerpt")),
            )
            for flag in data.flags[-50:]
        ]
        or None,
    )


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= GALLERY_TEXT_CHARS else text[:GALLERY_TEXT_CHARS] + "\n… (clipped)"


def gallery(data: RunData) -> list[dict[str, Any]]:
    """Early, middle and late steps' saved samples, every field as display text."""
    steps = sorted(data.samples)
    if not steps:
        return []
    labels: dict[int, str] = {}
    for step, label in ((steps[0], "early"), (steps[-1], "late"), (steps[len(steps) // 2], "middle")):
        labels.setdefault(step, label)
    chosen = sorted(labels)
    shown = []
    for step in chosen:
        items = []
        for sample in data.samples[step]:
            task = sample.get("task") if isinstance(sample.get("task"), dict) else {}
            facts = {
                key: sample[key]
                for key in ("reward", "valid", "reason", "solve_rate", "correct", "status", "format_error")
                if key in sample and sample[key] is not None
            }
            items.append(
                {
                    "task_type": str(sample.get("task_type", "?")),
                    "role": str(sample.get("role", "?")),
                    "facts": ", ".join(f"{k}={_clip(v)}" for k, v in facts.items()),
                    "prompt": _clip(sample.get("prompt", "")),
                    "response": _clip(sample.get("response", "")),
                    "answer": _clip(sample["answer"]) if sample.get("answer") is not None else None,
                    "task": {k: _clip(v) for k, v in task.items() if v not in ("", [], (), None)},
                }
            )
        shown.append({"step": step, "label": labels[step], "samples": items})
    return shown


def build_report(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write `index.html` and its figures into `out_dir` (default RUN_DIR/report); returns the page."""
    from jinja2 import Environment, select_autoescape

    data = RunData.load(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else data.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = figure_sections(data, out)
    template_text = resources.files("azr").joinpath("templates/report.html").read_text(encoding="utf-8")
    environment = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    steps = [record["step"] for record in data.metrics]
    page = environment.from_string(template_text).render(
        run=str(data.root),
        generated=f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        steps_done=max(steps) if steps else 0,
        steps_total=data.config.get("steps", "?"),
        model=(data.config.get("model") or {}).get("path", "?"),
        preset_format=(data.config.get("selfplay") or {}).get("prompt_format", "?"),
        task_count=len(data.tasks),
        problems=data.problems,
        sections=sections,
        gallery=gallery(data),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def report_command(
    run_dir: Path = typer.Argument(..., help="A run directory (finished or still training)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/report)."),
) -> None:
    """Write a static HTML report (PNG figures beside it) of what self-play did in a run."""
    if not run_dir.is_dir():
        typer.echo(f"error: {run_dir} is not a directory", err=True)
        raise typer.Exit(2)
    index = build_report(run_dir, out)
    typer.echo(f"report: {index}")
