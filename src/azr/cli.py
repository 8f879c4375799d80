"""The `azr` command. Each subcommand lives beside the concept it drives; this file only wires them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from azr import __version__
from azr.evaluation.cli import eval_command
from azr.executor.cli import exec_app
from azr.models import MODELS
from azr.models.cli import models_app
from azr.report import report_command
from azr.task_browser import tasks_command

app = typer.Typer(
    name="azr",
    help="Absolute Zero self-play: propose, solve and learn from Python tasks checked by a sandbox.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(exec_app, name="exec")
app.add_typer(models_app, name="models")
app.command("eval")(eval_command)
app.command("report")(report_command)
app.command("tasks")(tasks_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"azr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Absolute Zero self-play reasoning."""


@app.command()
def train(
    config: str = typer.Option(
        "tiny-cpu", "--config", "-c", help="Preset name (tiny-cpu, paper-7b-coder) or a YAML config file."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=f"A named model ({', '.join(MODELS)}; see `azr models list`), a local transformers model "
        "directory, or a .gguf file.",
    ),
    steps: int | None = typer.Option(None, "--steps", help="Total number of steps to reach."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run directory (default: runs/<preset>-<time>)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override any config field, e.g. --set selfplay.batch_size=8 (repeatable)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the run in this directory from its last complete checkpoint."
    ),
) -> None:
    """Run Absolute Zero self-play training (propose, validate, solve, learn) and write a run directory."""
    from rich.console import Console

    from azr.config import ConfigError, dump_config, load_config
    from azr.policy import ModelLoadError
    from azr.run_dir import RunDir
    from azr.safety import SafetyStop
    from azr.trainer import run_training, summary_table

    console = Console()
    extra = (
        list(overrides)
        + ([f"model.path={model}"] if model is not None else [])
        + ([f"steps={steps}"] if steps is not None else [])
    )
    try:
        if resume is not None:
            run, resolved = RunDir.open(resume)
            if extra:
                resolved = load_config(str(run.config_path), extra)
                dump_config(resolved, run.config_path)
        else:
            resolved = load_config(config, extra)
            target = run_dir or Path("runs") / f"{Path(config).stem}-{datetime.now():%Y%m%d-%H%M%S}"
            run = RunDir.create(target, resolved)
        records = run_training(resolved, run, resume=resume is not None)
    except (ConfigError, ModelLoadError, FileExistsError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    except SafetyStop as stop:
        console.print(f"[red]stopped by the safety monitor:[/red] {stop}")
        console.print(f"the step is checkpointed; inspect, then `azr train --resume {run.root}` to go on")
        raise typer.Exit(3) from None
    console.print(summary_table(records, resolved.selfplay.task_types))
    console.print(f"run directory: [bold]{run.root}[/bold]")
