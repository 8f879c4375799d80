"""Where step metrics go: metrics.jsonl (always), TensorBoard (default on), Weights & Biases (optional)."""

from __future__ import annotations

import logging
from typing import Any

from azr.config import TrainConfig
from azr.run_dir import RunDir

log = logging.getLogger(__name__)


class MetricsWriter:
    def __init__(self, run: RunDir, config: TrainConfig, resume_step: int = 0):
        self.run = run
        self._tensorboard = None
        self._wandb = None
        if config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after its last checkpoint, so curves don't fork.
            self._tensorboard = SummaryWriter(str(run.tensorboard_dir), purge_step=resume_step + 1)
        if config.logging.wandb_project:
            try:
                import wandb
            except ImportError:
                log.warning("logging.wandb_project is set but wandb is not installed; skipping W&B")
            else:
                self._wandb = wandb.init(
                    project=config.logging.wandb_project,
                    dir=str(run.root),
                    config=config.model_dump(mode="json"),
                    resume="allow",
                    id=run.root.name,
                )

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        self.run.append_metrics(record)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def histogram(self, step: int, name: str, values: list[float]) -> None:
        if self._tensorboard is not None and values:
            import torch

            self._tensorboard.add_histogram(name, torch.tensor(values), step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
