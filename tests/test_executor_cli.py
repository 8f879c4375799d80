"""`azr exec validate`: the JSONL contract, order, copied fields, malformed lines and missing files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from azr.cli import app

runner = CliRunner()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_validate_writes_one_line_per_input_in_order(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"id": "a", "program": "def f(x):\n    return x * 2", "input": "21"}),
            json.dumps({"id": "b", "snippet": "def f(x):\n    return 1 / x", "input": "0"}),
            "",
            "{not json",
            json.dumps({"id": "d", "program": "import os\ndef f(x):\n    return x", "input": "1"}),
            json.dumps({"id": "e", "program": "def f(x):\n    while True:\n        pass", "input": "1"}),
            json.dumps({"id": "f", "input": "1"}),
        ],
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["exec", "validate", str(source), "--out", str(out), "--workers", "2", "--timeout", "0.3"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in records] == ["a", "b", None, "d", "e", "f"]
    assert [r["status"] for r in records] == ["ok", "error", "error", "banned", "timeout", "error"]
    assert records[0] == {"valid": True, "output": "42", "status": "ok", "error": None,
                          "seconds": records[0]["seconds"], "id": "a"}  # fmt: skip
    assert "ZeroDivisionError" in records[1]["error"] and records[1]["valid"] is False
    assert records[2]["error"].startswith("line 3: not valid JSON")
    assert "'program'" in records[5]["error"]
    assert all(isinstance(r["seconds"], float) for r in records)


def test_validate_prints_to_stdout_without_out(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl", [json.dumps({"program": "def f(a):\n    return a", "input": "'x'"})]
    )
    result = runner.invoke(app, ["exec", "validate", str(source), "--workers", "1"])
    assert result.exit_code == 0
    assert json.loads(result.stdout.strip())["output"] == "'x'"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["exec", "validate", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output
