"""The `azr` command. Each subcommand lives beside the concept it drives; this file only wires them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from azr import __version__
from azr.config import available_presets
from azr.evaluation.cli import eval_command
from azr.evaluation.compare import compare_command
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
app.command("compare")(compare_command)
app.command("report")(report_command)
app.command("tasks")(tasks_command)


def _dotted(config: object, name: str) -> object:
    for part in name.split("."):
        config = getattr(config, part)
    return config


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
        "tiny-cpu",
        "--config",
        "-c",
        help=f"Preset name ({', '.join(available_presets())}) or a YAML config file.",
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
    """Run Absolute Zero self-play training (propose, validate, solve, learn) and write a run directory.

    Under a launcher (`torchrun --nproc-per-node N -m azr train ...`) the N processes form one
    data-parallel job: rank 0 trains and writes the run directory, the others follow it.
    """
    from datetime import timedelta

    from rich.console import Console

    from azr.config import ConfigError, dump_config, load_config, settings_missing_from
    from azr.data_parallel import follow
    from azr.distributed import init_distributed, launched_world_size, shutdown_distributed
    from azr.policy import ModelLoadError
    from azr.run_dir import RunDir
    from azr.safety import SafetyStop
    from azr.trainer import run_training, summary_table

    console = Console()
    extra = (
        list(overrides)
        + ([f"model.path={model}"] if model is not None else [])
        + ([f"steps={steps}"] if steps is not None else [])
        + [f"distributed.world_size={launched_world_size()}"]
    )
    try:
        # Every rank resolves the same config from the same arguments; only rank 0 writes it.
        if resume is not None:
            run, _ = RunDir.open(resume)
            resolved = load_config(str(run.config_path), extra)
            missing = settings_missing_from(run.config_path)
            if missing:
                settings = ", ".join(f"{name}={_dotted(resolved, name)!r}" for name in missing)
                console.print(
                    f"[yellow]warning:[/yellow] {run.config_path} predates {len(missing)} setting(s), which "
                    f"this run now takes at their defaults: {settings}; `--set` one to keep the old behaviour"
                )
        else:
            resolved = load_config(config, extra)
        world = init_distributed(timedelta(minutes=resolved.distributed.timeout_minutes))
        try:
            if not world.is_leader:
                follow(world)
                return
            if resume is not None:
                dump_config(resolved, run.config_path)
            else:
                target = run_dir or Path("runs") / f"{Path(config).stem}-{datetime.now():%Y%m%d-%H%M%S}"
                run = RunDir.create(target, resolved)
            records = run_training(resolved, run, resume=resume is not None, world=world)
        finally:
            shutdown_distributed(world)
    except (ConfigError, ModelLoadError, FileExistsError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    except SafetyStop as stop:
        console.print(f"[red]stopped by the safety monitor:[/red] {stop}")
        console.print(f"the step is checkpointed; inspect, then `azr train --resume {run.root}` to go on")
        raise typer.Exit(3) from None
    console.print(summary_table(records, resolved.selfplay.task_types))
    console.print(f"run directory: [bold]{run.root}[/bold]")
