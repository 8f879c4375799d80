"""`azr exec`: run the sandboxed executor over JSONL files from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.progress import Progress

from azr.executor.config import ExecutorConfig
from azr.executor.pool import Executor
from azr.executor.results import ExecResult, Status

exec_app = typer.Typer(help="Run model-written Python in the sandbox.", no_args_is_help=True)

_CONSUMED_FIELDS = ("program", "snippet", "input")
_RESULT_FIELDS = ("valid", "output", "status", "error", "seconds")


def _parse_line(number: int, line: str) -> tuple[dict[str, Any], str | None, str | None, str | None]:
    """The row (empty when not an object), its program and input, and why the line is malformed."""
    try:
        row = json.loads(line)
    except ValueError as error:
        return {}, None, None, f"line {number}: not valid JSON ({error})"
    if not isinstance(row, dict):
        return {}, None, None, f"line {number}: not a JSON object"
    program = row.get("program", row.get("snippet"))
    input_expr = row.get("input")
    if not isinstance(program, str) or not isinstance(input_expr, str):
        return row, None, None, f"line {number}: needs string fields 'program' (or 'snippet') and 'input'"
    return row, program, input_expr, None


def _output_line(row: dict[str, Any], result: ExecResult) -> str:
    record: dict[str, Any] = {
        "valid": result.ok,
        "output": result.output,
        "status": result.status.value,
        "error": result.error,
        "seconds": round(result.seconds, 6),
    }
    for key, value in row.items():
        if key not in _CONSUMED_FIELDS and key not in _RESULT_FIELDS:
            record[key] = value
    return json.dumps(record)


def _submit_all(executor: Executor, lines: list[str]) -> Iterator[tuple[dict[str, Any], Future]]:
    for number, line in enumerate(lines, start=1):
        row, program, input_expr, malformed = _parse_line(number, line)
        if program is None or input_expr is None:
            done: Future = Future()
            done.set_result(ExecResult(Status.ERROR, error=malformed))
            yield row, done
        else:
            yield row, executor.validate(program, input_expr)


@exec_app.command("validate")
def validate(
    in_path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, metavar="IN.jsonl", help="Programs."),
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Write results here, not stdout.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Sandbox workers; 0: one per core.")] = 0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="CPU seconds per run; wall-clock cap is 3x that.")
    ] = 10.0,
) -> None:
    """Validate each line {"program": str, "input": str, ...}; "snippet" is accepted for "program".

    Writes one JSON line per input line, in input order, to --out or stdout.

    Each holds "valid", "output", "status", "error", "seconds" and the line's other fields (e.g. "id").

    Valid means: passes the ban check, runs within the limits, returns plain data, same output twice.

    Blank lines are skipped. A malformed line (bad JSON, missing fields) becomes a status "error" line.

    Exits 0 whenever the file could be processed, however many programs were invalid.
    """
    lines = [line for line in in_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = ExecutorConfig(workers=workers, timeout_s=timeout)
    with (
        Executor(config) as executor,
        out.open("w", encoding="utf-8") if out else nullcontext(sys.stdout) as sink,
    ):
        _write_results(executor, lines, sink, show_progress=out is not None)
    if out is not None:
        typer.echo(f"wrote {len(lines)} results to {out}", err=True)


def _write_results(executor: Executor, lines: list[str], sink: TextIO, show_progress: bool) -> None:
    submitted = list(_submit_all(executor, lines))
    progress = Progress(console=Console(stderr=True), transient=True, disable=not show_progress)
    with progress:
        task = progress.add_task("validating", total=len(submitted))
        for row, future in submitted:
            sink.write(_output_line(row, future.result()) + "\n")
            progress.advance(task)
