"""The `azr` command. Each subcommand lives beside the concept it drives; this file only wires them."""

from __future__ import annotations

import typer

from azr import __version__
from azr.executor.cli import exec_app

app = typer.Typer(
    name="azr",
    help="Absolute Zero self-play: propose, solve and learn from Python tasks checked by a sandbox.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(exec_app, name="exec")


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
