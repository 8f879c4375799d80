"""`azr tasks`: browse or export the task buffers of a run, finished or still training.

The database is opened read-only (SQLite URI `mode=ro`), so a trainer writing to it is never blocked or
disturbed; in WAL mode a reader sees the last committed state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

BUFFER_FILENAME = "buffers.sqlite"


@dataclass(frozen=True)
class BufferTask:
    """One row of the `tasks` table; `task_id` is its SQLite row id, stable for the life of the run."""

    task_id: int
    task_type: str
    step: int
    program: str
    input: str
    output: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str

    def record(self) -> dict[str, Any]:
        """The JSON export: induction tasks carry inputs/outputs/message, the others input/output."""
        row: dict[str, Any] = {
            "task_id": self.task_id,
            "task_type": self.task_type,
            "step": self.step,
            "program": self.program,
        }
        if self.inputs:
            row |= {"inputs": list(self.inputs), "outputs": list(self.outputs), "message": self.message}
        else:
            row |= {"input": self.input, "output": self.output}
        return row


def _json_list(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return ()
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def read_tasks(
    buffer_path: Path | str, task_type: str | None = None, since: int | None = None
) -> list[BufferTask]:
    """The buffered tasks, oldest first, optionally of one type and added at `since` or later.
    Raises FileNotFoundError when there is no database."""
    path = Path(buffer_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no task buffers at {path}")
    query = (
        "SELECT id, task_type, step, program, input, output, inputs, outputs, message FROM tasks"
        " WHERE (? IS NULL OR task_type = ?) AND (? IS NULL OR step >= ?) ORDER BY id"
    )
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute(query, (task_type, task_type, since, since)).fetchall()
    finally:
        connection.close()
    return [
        BufferTask(
            int(row_id),
            str(kind),
            int(step),
            str(program),
            str(input_expr),
            str(output),
            _json_list(inputs),
            _json_list(outputs),
            str(message),
        )
        for row_id, kind, step, program, input_expr, output, inputs, outputs, message in rows
    ]


def _table(tasks: list[BufferTask]):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(tasks)} buffered tasks", show_lines=True)
    for column in ("id", "type", "step", "program", "input -> output / message"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        if task.inputs:
            io = "\n".join(f"{i} -> {o}" for i, o in zip(task.inputs, task.outputs, strict=False))
            io = f"{io}\nmessage: {task.message}"
        else:
            io = f"{task.input} -> {task.output}"
        # Text, not str: model-written code like `x[red]` must not be read as rich markup.
        table.add_row(str(task.task_id), task.task_type, str(task.step), Text(task.program), Text(io))
    return table


def _jsonl(tasks: list[BufferTask]) -> Iterator[str]:
    for task in tasks:
        yield json.dumps(task.record(), ensure_ascii=False)


def tasks_command(
    run_dir: Path = typer.Argument(..., help="A run directory (finished or still training)."),
    task_type: str | None = typer.Option(
        None, "--type", help="Only this task type (deduction, abduction, induction)."
    ),
    since: int | None = typer.Option(
        None, "--since", help="Only tasks added at this step or later (0 = the seed tasks)."
    ),
    output_format: str = typer.Option(
        "table", "--format", help="'table' (rich) or 'jsonl' (one task a line)."
    ),
) -> None:
    """Browse or export the task buffers of a run, read-only (safe while the trainer runs)."""
    if output_format not in ("table", "jsonl"):
        typer.echo(f"error: --format must be 'table' or 'jsonl', got {output_format!r}", err=True)
        raise typer.Exit(2)
    try:
        tasks = read_tasks(run_dir / BUFFER_FILENAME, task_type, since)
    except (FileNotFoundError, sqlite3.Error) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if output_format == "jsonl":
        for line in _jsonl(tasks):
            typer.echo(line)
    else:
        from rich.console import Console

        Console().print(_table(tasks))
