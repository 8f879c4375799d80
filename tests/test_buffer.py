"""Task buffers: dedup, cap (newest kept), deterministic sampling, persistence and kill-safety."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from azr.buffer import TaskBuffer, open_buffers, task_key
from azr.tasks import Task


def numbered(i: int, step: int = 0) -> Task:
    return Task(f"def f(x):\n    return x + {i}", "1", str(1 + i), step=step)


def contents(tasks: Iterable[Task]) -> tuple[Task, ...]:
    """The tasks without their buffer ids, to compare with tasks that were never stored."""
    return tuple(replace(task, task_id=None) for task in tasks)


def test_dedup_ignores_layout_comments_and_quotes(tmp_path: Path) -> None:
    buffer = TaskBuffer(tmp_path / "b.sqlite", "deduction")
    first = Task("def f(a):\n    return a", '"x"', "'x'")
    same = Task("def f(a):\n\n    # identity\n    return a", "'x'", "'x'")
    other_input = Task("def f(a):\n    return a", "'y'", "'y'")
    assert buffer.add([first, same, other_input, first]) == 2
    assert buffer.add([same]) == 0
    assert contents(buffer.tasks) == (first, other_input)
    assert buffer.stored(same) == buffer.tasks[0] and buffer.stored(numbered(9)) is None
    assert task_key(first) == task_key(same) != task_key(other_input)


def test_cap_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buffer = TaskBuffer(path, "deduction", cap=3)
    buffer.add([numbered(i) for i in range(2)])
    buffer.add([numbered(i, step=1) for i in range(2, 5)])
    assert [t.output for t in buffer.tasks] == ["3", "4", "5"]
    # A dropped task may come back later as new.
    assert buffer.add([numbered(0, step=2)]) == 1
    assert [t.output for t in buffer.tasks] == ["4", "5", "1"]
    assert [t.output for t in TaskBuffer(path, "deduction", cap=3).tasks] == ["4", "5", "1"]


def test_types_share_one_file_and_reload_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "buffers.sqlite"
    buffers = open_buffers(path, ["deduction", "induction"])
    induction_task = Task(
        "def f(a):\n    return a", inputs=("1", "2"), outputs=("1", "2"), message="id", step=4
    )
    buffers["deduction"].add([numbered(1, step=3)])
    buffers["induction"].add([induction_task])
    reopened = open_buffers(path, ["deduction", "induction", "abduction"])
    assert contents(reopened["deduction"].tasks) == (numbered(1, step=3),)
    assert contents(reopened["induction"].tasks) == (induction_task,)
    # Ids are the rows' ids: stable across reopening, distinct across types sharing the file.
    assert reopened["deduction"].tasks == buffers["deduction"].tasks
    assert [t.task_id for t in (*reopened["deduction"].tasks, *reopened["induction"].tasks)] == [1, 2]
    assert len(reopened["abduction"]) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sampling_is_deterministic_given_the_rng(tmp_path: Path) -> None:
    buffer = TaskBuffer(":memory:", "deduction")
    buffer.add([numbered(i) for i in range(20)])
    first = buffer.sample_references(random.Random(7), 6)
    assert first == buffer.sample_references(random.Random(7), 6)
    assert len(set(first)) == 6
    assert len(buffer.sample_references(random.Random(0), 50)) == 20


def test_solver_batch_puts_this_steps_tasks_first_then_draws_uniformly() -> None:
    buffer = TaskBuffer(":memory:", "deduction")
    buffer.add([numbered(i, step=0) for i in range(10)])
    buffer.add([numbered(i, step=5) for i in range(10, 13)])
    fresh = [buffer.stored(numbered(11, step=6)), buffer.stored(numbered(3, step=6))]
    batch = buffer.sample_solver_batch(random.Random(1), 6, first=fresh)
    assert batch[:2] == fresh
    assert len({t.task_id for t in batch}) == 6
    assert batch == buffer.sample_solver_batch(random.Random(1), 6, first=fresh)
    # More fresh tasks than the batch: the first n of them, in order.
    assert buffer.sample_solver_batch(random.Random(1), 1, first=fresh) == fresh[:1]
    # Fewer tasks than the batch: every task once, then drawn again.
    small = TaskBuffer(":memory:", "abduction")
    small.add([numbered(0), numbered(1)])
    assert set(small.sample_solver_batch(random.Random(0), 5)) == set(small.tasks)
    with pytest.raises(ValueError, match="empty"):
        TaskBuffer(":memory:", "induction").sample_solver_batch(random.Random(0), 1)


def test_solver_batches_without_new_tasks_spread_uniformly_over_the_buffer() -> None:
    """The bug this replaces served the newest step's tasks in every batch: with 300 seed tasks and B = 4,
    4 distinct tasks filled 80 slots over 20 steps."""
    buffer = TaskBuffer(":memory:", "deduction")
    buffer.add([numbered(i, step=0) for i in range(299)])
    buffer.add([numbered(299, step=1)])  # a newer step must not be favoured once it is no longer fresh
    rng = random.Random(0)
    twenty_steps = [t.task_id for _ in range(20) for t in buffer.sample_solver_batch(rng, 4)]
    # 80 uniform draws (without replacement within a batch) from 300 tasks: about 70 distinct expected.
    assert len(set(twenty_steps)) >= 60

    counts = Counter(t.task_id for _ in range(3000) for t in buffer.sample_solver_batch(rng, 4))
    expected = 3000 * 4 / len(buffer)
    chi_square = sum((counts[t.task_id] - expected) ** 2 / expected for t in buffer.tasks)
    # 299 degrees of freedom: mean 299, sd about 24.5; 400 is beyond the 99.99th percentile.
    assert chi_square < 400, chi_square
    assert counts[buffer.tasks[-1].task_id] < 2 * expected


def test_export_jsonl(tmp_path: Path) -> None:
    buffer = TaskBuffer(":memory:", "induction")
    buffer.add([Task("def f(a):\n    return a", inputs=("1",), outputs=("1",), message="m", step=2)])
    assert buffer.export_jsonl(tmp_path / "out.jsonl") == 1
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row == {
        "task_type": "induction",
        "task_id": 1,
        "program": "def f(a):\n    return a",
        "step": 2,
        "inputs": ["1"],
        "outputs": ["1"],
        "message": "m",
    }


WRITER = """
import sys
from azr.buffer import TaskBuffer
from azr.tasks import Task
buffer = TaskBuffer(sys.argv[1], "deduction", cap=500)
print("ready", flush=True)
batch = 0
while True:
    buffer.add([Task(f"def f(x):\\n    return x + {batch}_{i}", "1", "0", step=batch) for i in range(10)])
    batch += 1
"""


def rows_in(path: Path) -> int:
    with sqlite3.connect(path, timeout=10) as db:
        return db.execute("SELECT count(*) FROM tasks").fetchone()[0]


def test_survives_sigkill_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "buffers.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        # Kill only once several batches have landed, so the kill falls amid a stream of writes.
        deadline = time.monotonic() + 60
        while rows_in(path) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    buffer = TaskBuffer(path, "deduction", cap=500)
    steps = [task.step for task in buffer.tasks]
    assert len(buffer) >= 50
    # Whole batches only (each insert is one transaction), oldest dropped by the cap, order kept.
    assert len(buffer) % 10 == 0 and steps == sorted(steps)
    assert all(steps.count(step) == 10 for step in set(steps))
    assert buffer.add([numbered(1, step=steps[-1] + 1)]) == 1
