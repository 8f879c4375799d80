"""`azr report` and `azr tasks` on a real 2-step tiny run, on a hand-made run with every metric, and on
run directories with missing pieces."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from azr.buffer import open_buffers
from azr.cli import app
from azr.report import build_report
from azr.safety import FLAGS_FILENAME, SafetyConfig, SafetyMonitor
from azr.tasks.base import Task
from test_trainer import TINY_SETTINGS

ALL_FIGURES = (
    "rewards.png",
    "advantages.png",
    "rates.png",
    "learnability.png",
    "buffers.png",
    "complexity.png",
    "diversity.png",
    "eval.png",
    "time.png",
    "safety.png",
)
TYPES = ("deduction", "abduction", "induction")
HOSTILE = "<script>alert('pwned')</script><img src=http://example.com/x.png>"


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real self-play steps of the tiny model on the shipped seed tasks, with validation at step 2."""
    from azr.config import load_config
    from azr.run_dir import RunDir
    from azr.trainer import run_training

    settings = [
        *TINY_SETTINGS,
        f"model.path={tiny_model_dir}",
        "steps=2",
        "selfplay.seed_file=builtin",
        "eval.every_steps=2",
        "eval.limit=2",
        "eval.benchmarks=[cruxeval-o]",
        "logging.samples_per_step=2",
    ]
    config = load_config("tiny-cpu", settings)
    run = RunDir.create(tmp_path_factory.mktemp("report") / "run", config)
    run_training(config, run, resume=False)
    return run.root


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-made run directory where every metric the report reads is present, hostile text included."""
    root = tmp_path_factory.mktemp("full") / "run"
    (root / "samples").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"steps": 3, "selfplay": {"task_types": list(TYPES)}}))
    programs = [
        "def f(a):\n    return a",
        "def f(xs):\n    return sorted(xs)",
        "def f(s):\n    out = ''\n    for c in s:\n        if c.isupper():\n            out += c\n"
        "    return out",
        "def f(n):\n    return [i * i for i in range(n) if i % 2]",
    ]
    buffers = open_buffers(root / "buffers.sqlite", TYPES)
    for step in range(3):
        buffers["deduction"].add(
            [Task(programs[step + i], f"'{step}{i}'", f"'{i}'", step=step) for i in (0, 1)]
        )
        buffers["induction"].add(
            [Task(programs[step], inputs=("1", "2"), outputs=("1", "2"), message=HOSTILE, step=step)]
        )
    buffers["abduction"].add(
        [Task("def f(a):\n    return '[red]x[/red]' + a", "'a'", "'[red]x[/red]a'", step=1)]
    )
    monitor = SafetyMonitor(SafetyConfig(), root / FLAGS_FILENAME)
    with open(root / "metrics.jsonl", "w") as metrics:
        for step in (1, 2, 3):
            monitor.screen(step, "deduction", "propose", "outsmart the less intelligent humans " + HOSTILE)
            record = {"step": step, **monitor.end_step(step)}
            for t in TYPES:
                for role in ("propose", "solve"):
                    record[f"reward/{t}/{role}"] = 0.1 * step
                    record[f"advantage_abs/{t}/{role}"] = 0.5
                record |= {f"valid_rate/{t}": 0.5, f"solve_rate/{t}": 0.25, f"learnability/{t}": 0.4}
                record[f"buffer/{t}"] = 2 * step
            record |= {"time/generate": 3.0, "time/update": 1.0, "eval/cruxeval-o": 0.1 * step}
            metrics.write(json.dumps(record) + "\n")
            samples = [
                {"step": step, "task_type": t, "role": "propose", "prompt": HOSTILE, "response": HOSTILE,
                 "reward": 0.5, "valid": True, "reason": "ok", "solve_rate": 0.5,
                 "task": {"program": HOSTILE}}
                for t in TYPES
            ] + [
                {"step": step, "task_type": "deduction", "role": "solve", "prompt": "p", "response": HOSTILE,
                 "answer": HOSTILE, "correct": False, "status": "error", "reward": 0.0}
            ]  # fmt: skip
            (root / "samples" / f"step_{step:06d}.jsonl").write_text(
                "".join(json.dumps(s) + "\n" for s in samples)
            )
    return root


@pytest.fixture(scope="session")
def tiny_report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(tiny_run, tmp_path_factory.mktemp("tiny-report"))


@pytest.fixture(scope="session")
def full_report(full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(full_run, tmp_path_factory.mktemp("full-report"))


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value is not None]


def local_references(index: Path) -> list[str]:
    parser = _References()
    parser.feed(index.read_text())
    return parser.urls


def assert_png_with_content(path: Path) -> None:
    assert path.stat().st_size > 1000
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 5, f"{path.name} looks blank"


def test_report_of_a_real_run(tiny_report: Path):
    index = tiny_report
    html = index.read_text()
    expected = (
        "rewards.png",
        "rates.png",
        "buffers.png",
        "complexity.png",
        "diversity.png",
        "eval.png",
        "time.png",
    )
    for name in expected:
        assert_png_with_content(index.parent / name)
        assert f'src="{name}"' in html
    assert "no data" in html  # advantage_abs is not logged by this trainer yet, and nothing was flagged
    assert "Step 1 (early)" in html and "Step 2 (late)" in html
    for url in local_references(index):
        assert "://" not in url and not url.startswith("/")
        assert (index.parent / url).is_file()


def test_report_default_folder_and_cli(tiny_run: Path):
    result = CliRunner().invoke(app, ["report", str(tiny_run)])
    assert result.exit_code == 0, result.output
    assert (tiny_run / "report" / "index.html").is_file()


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium not installed (make setup installs it)"
)
def test_report_renders_in_headless_chromium(tiny_report: Path, full_report: Path, tmp_path: Path):
    for name, index in (("tiny", tiny_report), ("full", full_report)):
        screenshot = tmp_path / f"{name}.png"
        proc = subprocess.run(
            ["chromium", "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
             f"--screenshot={screenshot}", "--window-size=1280,2000", index.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        # Page console output (errors, CSP refusals, a script that ran) is logged as ":CONSOLE" lines.
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        assert console == []
        assert_png_with_content(screenshot)


def test_report_with_every_metric_escapes_model_text(full_report: Path):
    index = full_report
    for name in ALL_FIGURES:
        assert_png_with_content(index.parent / name)
    html = index.read_text()
    assert "no data" not in html
    assert "<script" not in html and "http://example.com" not in html.replace("&#34;", '"').split("<img")[0]
    assert "&lt;script&gt;alert(" in html
    assert all("://" not in url for url in local_references(index))
    assert "less intelligent humans" in html  # the flags table


def test_report_copes_with_missing_data(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    html = build_report(empty).read_text()
    assert html.count("no data") == 11  # ten figures and the gallery
    assert not list((empty / "report").glob("*.png"))

    early = tmp_path / "early"
    (early / "samples").mkdir(parents=True)
    (early / "config.yaml").write_text("steps: 100\n")
    (early / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward/deduction/propose": -1.0, "learnability/deduction": None})
        + '\n{"step": 2, "rew'
    )
    (early / "samples" / "step_000001.jsonl").write_text(
        '{"step": 1, "role": "propose", "solve_rate": null}\n{torn'
    )
    (early / "buffers.sqlite").write_text("not a database")
    html = build_report(early).read_text()
    assert (early / "report" / "rewards.png").is_file()
    assert "buffers.sqlite unreadable" in html
    assert "Step 1 (early)" in html


def run_tasks(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["tasks", *args, "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_tasks_jsonl_of_a_real_run(tiny_run: Path):
    tasks = run_tasks(str(tiny_run))
    with sqlite3.connect(tiny_run / "buffers.sqlite") as db:
        assert len(tasks) == db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] > 0
    assert {t["task_type"] for t in tasks} == set(TYPES)
    for task in tasks:
        assert {"task_id", "task_type", "program", "step"} <= set(task)
        if task["task_type"] == "induction":
            assert {"inputs", "outputs", "message"} <= set(task)
        else:
            assert {"input", "output"} <= set(task)
    assert {t["task_type"] for t in run_tasks(str(tiny_run), "--type", "abduction")} == {"abduction"}


def test_tasks_filters_table_and_read_only(full_run: Path):
    assert [t["step"] for t in run_tasks(str(full_run), "--type", "deduction")] == [0, 0, 1, 1, 2, 2]
    assert [(t["task_type"], t["step"]) for t in run_tasks(str(full_run), "--since", "2")] == [
        ("deduction", 2),
        ("deduction", 2),
        ("induction", 2),
    ]
    # A trainer in the middle of an insert does not block the reader, which sees committed rows only.
    writer = sqlite3.connect(full_run / "buffers.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO tasks VALUES (NULL, 'deduction', 'k', 'p', 'i', 'o', '[]', '[]', '', 9)")
    try:
        assert run_tasks(str(full_run), "--since", "9") == []
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    table = CliRunner().invoke(app, ["tasks", str(full_run), "--type", "abduction"])
    assert table.exit_code == 0
    assert "[red]x[/red]" in table.output  # shown as written, not read as rich markup
    missing = CliRunner().invoke(app, ["tasks", str(full_run / "nope")])
    assert missing.exit_code == 2
