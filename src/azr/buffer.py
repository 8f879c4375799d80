"""Task buffers: one per task type, deduplicated, capped (newest kept), persisted in SQLite.

All buffers of a run share one database file in WAL mode, one table with a `task_type` column. Every insert
is one transaction, so a process killed at any instant leaves the file with either all or none of that
batch; reopening the file resumes the buffer exactly. An in-memory copy (insertion order) serves sampling,
which is deterministic given a `random.Random`.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from azr.parsing import normalize_arguments, normalize_program
from azr.tasks.base import Task

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_type TEXT NOT NULL,
    key TEXT NOT NULL,
    program TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    message TEXT NOT NULL,
    step INTEGER NOT NULL,
    UNIQUE (task_type, key)
)
"""


def task_key(task: Task) -> str:
    """The deduplication key: normalised program plus normalised input(s). Layout, comments and quote
    style do not make a task new; the gold output is implied by program and input."""
    inputs = (
        [normalize_arguments(inp) for inp in task.inputs]
        if task.inputs
        else [normalize_arguments(task.input)]
    )
    return json.dumps([normalize_program(task.program), inputs])


def _row(task: Task) -> tuple:
    return (
        task.program,
        task.input,
        task.output,
        json.dumps(task.inputs),
        json.dumps(task.outputs),
        task.message,
        task.step,
    )


def _task(row: Sequence) -> Task:
    task_id, program, input_expr, output, inputs, outputs, message, step = row
    return Task(
        program,
        input_expr,
        output,
        tuple(json.loads(inputs)),
        tuple(json.loads(outputs)),
        message,
        step,
        task_id,
    )


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a buffer database in WAL mode. `:memory:` gives a throwaway one."""
    connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL is safe against process kills in WAL mode (only an OS crash can lose the last commits).
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(SCHEMA)
    return connection


class TaskBuffer:
    """The tasks of one type. Open several types on the same file; each reloads its rows on open.

    Every stored task carries its `task_id`, the row id: stable for the life of the run, so samples and
    reports can point at a task. `cap` bounds the size; when exceeded, the oldest tasks are dropped (the
    reference kept the oldest and discarded new ones, which freezes the curriculum).
    """

    def __init__(self, path: str | Path | sqlite3.Connection, task_type: str, cap: int = 16384) -> None:
        if cap < 1:
            raise ValueError("buffer cap must be at least 1")
        self.task_type = task_type
        self.cap = cap
        self._db = path if isinstance(path, sqlite3.Connection) else connect(path)
        rows = self._db.execute(
            "SELECT key, id, program, input, output, inputs, outputs, message, step FROM tasks "
            "WHERE task_type = ? ORDER BY id",
            (task_type,),
        ).fetchall()
        self._tasks = [_task(row[1:]) for row in rows]
        self._by_key = {row[0]: task for row, task in zip(rows, self._tasks, strict=True)}

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """All tasks, oldest first."""
        return tuple(self._tasks)

    def stored(self, task: Task) -> Task | None:
        """The stored task that `task` duplicates (same key), with its id and the step that added it."""
        return self._by_key.get(task_key(task))

    def add(self, tasks: Iterable[Task]) -> int:
        """Insert new tasks (duplicates of stored or earlier ones are skipped) in one transaction, then
        apply the cap. Returns how many were inserted."""
        fresh: dict[str, Task] = {}
        for task in tasks:
            key = task_key(task)
            if key not in self._by_key and key not in fresh:
                fresh[key] = task
        if not fresh:
            return 0
        stored = []
        with self._db:  # one transaction: all or nothing, even if the process dies midway
            self._db.execute("BEGIN IMMEDIATE")
            for key, task in fresh.items():
                cursor = self._db.execute(
                    "INSERT INTO tasks (task_type, key, program, input, output, inputs, outputs, message,"
                    " step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.task_type, key, *_row(task)),
                )
                stored.append((key, replace(task, task_id=cursor.lastrowid)))
            overflow = len(self._tasks) + len(stored) - self.cap
            if overflow > 0:
                dropped = (self._tasks + [task for _, task in stored])[:overflow]
                self._db.executemany("DELETE FROM tasks WHERE id = ?", [(t.task_id,) for t in dropped])
        self._by_key.update(stored)
        self._tasks.extend(task for _, task in stored)
        if overflow > 0:
            for task in self._tasks[:overflow]:
                del self._by_key[task_key(task)]
            del self._tasks[:overflow]
        return len(stored)

    def sample_references(self, rng: random.Random, k: int) -> list[Task]:
        """k distinct tasks uniformly at random (all of them, shuffled, when fewer than k)."""
        return rng.sample(self._tasks, min(k, len(self._tasks)))

    def sample_solver_batch(self, rng: random.Random, n: int, first: Sequence[Task] = ()) -> list[Task]:
        """n tasks for the solver (the paper's solve phase): `first` (this step's valid tasks, at most n of
        them, in order), then uniform draws without replacement from the rest of the buffer. A step that
        added nothing gets a uniform sample of the whole buffer. Only a buffer with fewer than n tasks
        repeats some."""
        if not self._tasks and not first:
            raise ValueError(f"the {self.task_type} buffer is empty")
        batch = list(first[:n])
        taken = {task_key(task) for task in batch}
        rest = [task for key, task in self._by_key.items() if key not in taken]
        batch += rng.sample(rest, min(n - len(batch), len(rest)))
        if len(batch) < n:
            batch += rng.choices(batch, k=n - len(batch))
        return batch

    def remove_after(self, step: int) -> int:
        """Delete the tasks added after `step` and return how many: resuming from the checkpoint of `step`
        must not see tasks that a killed later step had already stored."""
        keep = [i for i, task in enumerate(self._tasks) if task.step <= step]
        removed = len(self._tasks) - len(keep)
        if removed:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM tasks WHERE task_type = ? AND step > ?", (self.task_type, step))
            self._tasks = [self._tasks[i] for i in keep]
            self._by_key = {task_key(task): task for task in self._tasks}
        return removed

    def export_jsonl(self, path: str | Path) -> int:
        """Write every task as one JSON object per line (oldest first); returns the count."""
        with Path(path).open("w", encoding="utf-8") as out:
            for task in self._tasks:
                row = {
                    "task_type": self.task_type,
                    "task_id": task.task_id,
                    "program": task.program,
                    "step": task.step,
                }
                if task.inputs:
                    row |= {
                        "inputs": list(task.inputs),
                        "outputs": list(task.outputs),
                        "message": task.message,
                    }
                else:
                    row |= {"input": task.input, "output": task.output}
                out.write(json.dumps(row) + "\n")
        return len(self._tasks)


def open_buffers(path: str | Path, task_types: Iterable[str], cap: int = 16384) -> dict[str, TaskBuffer]:
    """One buffer per task type, all in the database at `path` (e.g. `<run dir>/buffers.sqlite`)."""
    connection = connect(path)
    return {name: TaskBuffer(connection, name, cap) for name in task_types}
