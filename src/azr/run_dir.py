"""The run directory: where a training run keeps everything it needs to be inspected and resumed.

    RUN_DIR/
      config.yaml          resolved TrainConfig
      metrics.jsonl        one JSON object per step
      tensorboard/         the same metrics for TensorBoard
      buffers.sqlite       task buffers (SQLite, WAL)
      samples/step_N.jsonl proposals and answers of step N
      checkpoints/step_N/  model/, optimizer.pt, trainer_state.pt, COMPLETE
      train.log            the log

Every file that a resume reads is written so that a SIGKILL at any instant leaves either the old or the
new version: checkpoints are built in a hidden temp folder and renamed into place, metrics lines are
flushed and fsynced one step at a time and trimmed back to the checkpoint on resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azr.config import TrainConfig, dump_config, load_config
from azr.durable import atomic_write_text, fsync_dir, fsync_tree, read_jsonl

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{6,})$")
COMPLETE_MARKER = "COMPLETE"


class RunDir:
    """Paths and crash-safe file operations of one run."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.config_path = self.root / "config.yaml"
        self.metrics_path = self.root / "metrics.jsonl"
        self.tensorboard_dir = self.root / "tensorboard"
        self.buffer_path = self.root / "buffers.sqlite"
        self.samples_dir = self.root / "samples"
        self.eval_dir = self.root / "eval"
        self.checkpoints_dir = self.root / "checkpoints"
        self.log_path = self.root / "train.log"

    @classmethod
    def create(cls, root: Path | str, config: TrainConfig) -> RunDir:
        run = cls(root)
        if run.checkpoints_dir.exists() and any(run.checkpoints_dir.iterdir()):
            raise FileExistsError(
                f"{run.root} already holds a run with checkpoints; resume it with "
                f"`azr train --resume {run.root}` or choose another --run-dir"
            )
        for folder in (run.root, run.samples_dir, run.checkpoints_dir):
            folder.mkdir(parents=True, exist_ok=True)
        dump_config(config, run.config_path)
        return run

    @classmethod
    def open(cls, root: Path | str) -> tuple[RunDir, TrainConfig]:
        run = cls(root)
        if not run.config_path.is_file():
            raise FileNotFoundError(f"{run.root} is not a run directory (no config.yaml)")
        return run, load_config(str(run.config_path))

    # checkpoints

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:06d}"

    def completed_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(child.name)
            if match and (child / COMPLETE_MARKER).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        completed = self.completed_checkpoints()
        return completed[-1] if completed else None

    def save_checkpoint(self, step: int, write: Callable[[Path], None], keep_last: int) -> Path:
        """Let `write` fill a temp folder, then publish it as `step_N` with one atomic rename."""
        final = self.checkpoint_dir(step)
        staging = self.checkpoints_dir / f".staging-{final.name}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write(staging)
        (staging / COMPLETE_MARKER).write_text(json.dumps({"step": step}))
        fsync_tree(staging)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_dir(self.checkpoints_dir)
        for _, old in self.completed_checkpoints()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def remove_incomplete_checkpoints(self) -> None:
        """Drop what a kill mid-save left behind: staging folders and step folders without their marker."""
        if not self.checkpoints_dir.is_dir():
            return
        for child in self.checkpoints_dir.iterdir():
            if child.name.startswith(".staging-") or (
                CHECKPOINT_PATTERN.match(child.name) and not (child / COMPLETE_MARKER).is_file()
            ):
                shutil.rmtree(child, ignore_errors=True)

    # metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        # Strict JSON has no NaN or infinity: a diverged loss is written as null so that readers never break.
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(clean, sort_keys=True, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        # A kill while appending can leave one torn last line; it belongs to an unfinished step.
        return read_jsonl(self.metrics_path)

    def trim_metrics(self, last_step: int) -> None:
        """Keep the metrics of steps up to the checkpoint being resumed; later ones will be redone."""
        kept = [r for r in self.read_metrics() if int(r.get("step", 0)) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        path = self.samples_dir / f"step_{step:06d}.jsonl"
        atomic_write_text(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))

    def write_eval_records(self, step: int, records: list[dict[str, Any]]) -> None:
        """The per-problem records of the in-training validation at `step` (`azr eval`'s record format)."""
        self.eval_dir.mkdir(exist_ok=True)
        path = self.eval_dir / f"step_{step:06d}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def attach_file_log(run: RunDir) -> logging.Handler:
    handler = logging.FileHandler(run.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("azr").addHandler(handler)
    logging.getLogger("azr").setLevel(logging.INFO)
    return handler
