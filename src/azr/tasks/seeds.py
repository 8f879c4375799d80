"""Reading seed tasks from JSONL files such as the shipped `azr/data/programs/*.jsonl`.

Rows hold `snippet` and either `input`/`output` (one triplet) or `inputs`/`outputs`/`message` (induction).
Seed outputs were computed elsewhere; `azr.seeding.validate_seed_tasks` recomputes them in our sandbox.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from azr.tasks.base import Task

SHIPPED_PROGRAMS = {
    "io": "qwen2.5-coder-7b_io.jsonl",
    "induction": "qwen2.5-coder-7b_induction.jsonl",
}


def shipped_seed_path(kind: str) -> Path:
    """Path of a shipped seed file: kind `io` (deduction/abduction triplets) or `induction`."""
    if kind not in SHIPPED_PROGRAMS:
        raise ValueError(f"no shipped seed file of kind {kind!r}; known: {', '.join(SHIPPED_PROGRAMS)}")
    return Path(str(resources.files("azr").joinpath("data", "programs", SHIPPED_PROGRAMS[kind])))


def load_seed_tasks(path: str | Path) -> list[Task]:
    """All tasks of a seed JSONL file, in file order (step 0). A malformed row is an error naming its line."""
    tasks = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if "inputs" in row:
                    task = Task(
                        row["snippet"],
                        inputs=tuple(row["inputs"]),
                        outputs=tuple(row["outputs"]),
                        message=row.get("message", ""),
                    )
                else:
                    task = Task(row["snippet"], row["input"], row["output"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a seed task row ({error})") from error
            tasks.append(task)
    return tasks
