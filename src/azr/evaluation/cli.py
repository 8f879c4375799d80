"""`azr eval`: run a model on benchmarks, print a table of scores and write a results file.

Heavy modules (torch, transformers, the executor) are imported inside the command, so that `azr --help`
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from azr.evaluation.prompting import PROMPT_STYLES

if TYPE_CHECKING:
    from azr.evaluation.runner import EvalReport


def resolve_model_path(model: str) -> str:
    """Map `--model` to what `azr.policy.load_policy` accepts.

    Named models (`embedded`, `qwen2.5-coder-0.5b`, ...) and model paths pass through. A run directory of
    `azr train` (one with a `config.yaml` and a `checkpoints/` folder) becomes the model of its latest
    complete checkpoint, the same one `azr train --resume` would continue from; one checkpoint folder
    (`RUN/checkpoints/step_N`, or a copy kept elsewhere) becomes its model. Raises `ValueError` when the
    path does not exist, a run directory holds no complete checkpoint yet, or the checkpoint is incomplete.
    """
    from azr.models import is_named_model
    from azr.run_dir import COMPLETE_MARKER, RunDir

    if is_named_model(model):
        return model
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(
            f"--model {model}: no such file or directory (pass a model directory, a .gguf file, "
            "a run directory of `azr train`, or a named model: see `azr models list`)"
        )
    if (path / "model").is_dir() and (path / "trainer_state.pt").exists():
        if not (path / COMPLETE_MARKER).is_file():
            raise ValueError(
                f"--model {model}: a checkpoint without its {COMPLETE_MARKER} marker, so its writing was "
                "cut short; pick an earlier checkpoint"
            )
        return str(path / "model")
    run = RunDir(path)
    if not run.checkpoints_dir.is_dir():
        return str(path)
    latest = run.latest_checkpoint()
    if latest is None:
        raise ValueError(
            f"--model {model}: a run directory, but {run.checkpoints_dir} holds no complete checkpoint"
        )
    return str(latest[1] / "model")


def _parse_benchmark_files(options: list[str]) -> dict[str, Path]:
    from azr.evaluation.benchmarks import parse_benchmark_file_option

    return dict(parse_benchmark_file_option(option) for option in options)


def _print_report(report: EvalReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="azr eval")
    table.add_column("benchmark")
    table.add_column("problems", justify="right")
    for k in next(iter(report.pass_at.values()), {}):
        table.add_column(f"pass@{k}", justify="right")
    for name in report.scores:
        percentages = [f"{100 * value:.1f}" for value in report.pass_at[name].values()]
        table.add_row(name, str(report.config["problems"][name]), *percentages)
    console.print(table)
    timing = report.timing
    console.print(
        f"wall {timing['total_s']:.1f} s: generation {timing['generation_s']:.1f} s "
        f"({timing['generated_tokens']:.0f} tokens, {timing['tokens_per_s']:.1f} tokens/s), "
        f"then {timing['grading_wait_s']:.1f} s waiting for grading; sandbox execution "
        f"{timing['execution_s']:.1f} s and math grading {timing['math_grading_s']:.1f} s in total "
        "(both overlap generation)."
    )


def eval_command(
    model: str = typer.Option(
        "embedded",
        "--model",
        help="Model directory, .gguf file, run directory of `azr train` (its latest checkpoint), one "
        "checkpoint folder (RUN/checkpoints/step_N), or a named model: 'embedded' "
        "(SmolLM2-135M-Instruct), 'qwen2.5-coder-0.5b' (see `azr models list`).",
    ),
    benchmarks: str = typer.Option(
        ...,
        "--benchmarks",
        help="Comma-separated: cruxeval-o, cruxeval-i, "
        "humaneval, mbppplus, math500, aime24, aime25, amc23, minerva, olympiadbench, "
        "gsm8k, the held-out self-play probe probe-deduction, probe-abduction, probe-induction "
        "(all three: selfplay-probe), or a NAME given with --benchmark-file.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the first N problems of each benchmark."
    ),
    samples: int = typer.Option(
        1, "--samples", min=1, help="Samples per problem; > 1 reports unbiased pass@k."
    ),
    pass_k: int | None = typer.Option(
        None, "--pass-k", min=1, help="k of the pass@k score (default: --samples)."
    ),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 is greedy decoding."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Token budget per answer (default depends on the benchmark)."
    ),
    prompt_style: str = typer.Option(
        "auto",
        "--prompt-style",
        help="chat (instruct models: chat template, "
        "fenced code / \\boxed{} answers), completion (base models: plain prefixes, "
        "CRUXEval ends with `assert f(...) ==`), or auto (chat if the tokenizer "
        "has a chat template).",
    ),
    benchmark_file: list[str] = typer.Option(
        [],
        "--benchmark-file",
        help="NAME=PATH of a local JSONL set "
        "(e.g. LiveCodeBench, HumanEval+); schema in azr.evaluation.benchmarks.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write scores, per-problem records and config as JSON."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Sandbox workers (0: one per CPU core)."),
    exec_timeout: float = typer.Option(10.0, "--exec-timeout", min=0.1, help="CPU seconds per sandbox job."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Generation micro-batch size."),
    backend_name: str = typer.Option(
        "transformers",
        "--backend",
        help="Generation backend: transformers (the model as loaded, fp32 on CPU), transformers-bf16 or "
        "transformers-int8 (a faster copy of the weights; scores can differ slightly from fp32), vllm (GPU).",
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    device: str | None = typer.Option(None, "--device", help="torch device (default: cuda if available)."),
) -> None:
    """Evaluate a model on offline benchmarks (greedy pass@1 by default); code is only run in the sandbox."""
    from azr.config import GenerationConfig
    from azr.engines import BACKENDS, make_backend
    from azr.evaluation.benchmarks import BenchmarkError, load_benchmark
    from azr.evaluation.runner import evaluate
    from azr.executor import Executor, ExecutorConfig
    from azr.policy import ModelLoadError, load_policy

    if prompt_style not in PROMPT_STYLES:
        raise typer.BadParameter(f"use one of {', '.join(PROMPT_STYLES)}", param_hint="--prompt-style")
    if backend_name not in BACKENDS:
        raise typer.BadParameter(f"use one of {', '.join(BACKENDS)}", param_hint="--backend")
    names = [name.strip() for name in benchmarks.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter("name at least one benchmark", param_hint="--benchmarks")
    try:
        files = _parse_benchmark_files(benchmark_file)
        for name in names:  # fail on a bad name or file before spending time on the model
            load_benchmark(name, files, limit=1)
        model_path = resolve_model_path(model)
        policy = load_policy(model_path, device=device)
    except (BenchmarkError, ValueError, ModelLoadError) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    backend = make_backend(
        GenerationConfig(backend=backend_name, max_batch_size=batch_size), policy, seed=seed
    )
    with Executor(ExecutorConfig(workers=workers, timeout_s=exec_timeout)) as executor:
        try:
            report = evaluate(
                backend,
                executor,
                names,
                limit=limit,
                samples=samples,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                prompt_style=prompt_style,
                seed=seed,
                pass_k=pass_k,
                benchmark_files=files,
                progress=typer.echo,
            )
        except (BenchmarkError, ValueError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    report.config["model"] = model
    report.config["model_path"] = policy.source
    report.config["backend"] = backend_name
    _print_report(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        typer.echo(f"results written to {out}")
