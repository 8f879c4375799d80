"""Measure how well a small model follows a prompt format: valid-proposal and solve rates per task type.

Loads the embedded SmolLM2-135M-Instruct (or `--model`, e.g. `--model qwen2.5-coder-0.5b`), draws
references from the shipped seed programs, samples at `--temperature`, then parses, validates and judges
with the real executor.

    .venv/bin/python benchmarks/prompts.py --samples 32 --format completion --version v1

Prints one table row per (task type, role): parsed and valid/correct rates.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from azr.engines import SamplingParams
from azr.engines.transformers_backend import TransformersBackend
from azr.executor import Executor, ExecutorConfig
from azr.models import MODELS
from azr.parsing import BadFormat
from azr.policy import load_policy
from azr.prompts import get_format
from azr.seeding import validate_seed_tasks
from azr.tasks import Induction, get_task_type, load_seed_tasks
from azr.tasks.seeds import shipped_seed_path


def generate(
    backend: TransformersBackend,
    prompts: list[str],
    stop: list[str],
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> list[str]:
    """One completion per prompt (greedy at temperature 0); the backend already ends each text before its
    first stop string."""
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, stop=tuple(stop))
    return [completion.text for completion in backend.generate(prompts, params, seed=seed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--format", default="completion")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--references", type=int, default=6, help="K references per proposer prompt")
    parser.add_argument("--examples", type=int, default=2, help="worked examples per solver prompt")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="proposals and induction answers")
    parser.add_argument("--answer-tokens", type=int, default=48, help="deduction and abduction answers")
    parser.add_argument("--types", default="deduction,abduction,induction")
    parser.add_argument(
        "--induction-inputs", type=int, default=10, help="N inputs an induction proposal needs"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="print this many raw responses per row")
    parser.add_argument(
        "--model",
        help=f"a named model ({', '.join(MODELS)}), a model directory or .gguf (default: embedded)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-program-chars",
        type=int,
        default=0,
        help="only use seed tasks with programs this short (0: all)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    fmt = get_format(args.format, args.version)
    backend = TransformersBackend.from_policy(load_policy(args.model), max_batch_size=args.batch_size)
    rows = []
    with Executor(ExecutorConfig(workers=0, timeout_s=5.0)) as executor:
        io_tasks = validate_seed_tasks(
            get_task_type("deduction"), executor, load_seed_tasks(shipped_seed_path("io"))
        )
        induction_type = get_task_type("induction")
        induction_tasks = validate_seed_tasks(
            induction_type, executor, load_seed_tasks(shipped_seed_path("induction"))
        )
        if args.max_program_chars:
            io_tasks = [t for t in io_tasks if len(t.program) <= args.max_program_chars]
            induction_tasks = [t for t in induction_tasks if len(t.program) <= args.max_program_chars]
        print(f"seed pool: {len(io_tasks)} io tasks, {len(induction_tasks)} induction tasks", flush=True)
        pools = {"deduction": io_tasks, "abduction": io_tasks, "induction": induction_tasks}
        for name in args.types.split(","):
            task_type = Induction(args.induction_inputs) if name == "induction" else get_task_type(name)
            pool = pools[name]
            # Propose.
            prompts = []
            for _ in range(args.samples):
                if name == "induction":
                    references = [rng.choice(io_tasks), *rng.sample(pool, min(2, len(pool)))]
                else:
                    references = rng.sample(pool, args.references)
                prompts.append(task_type.proposer_prompt(fmt, references))
            started = time.time()
            responses = generate(
                backend,
                [p.text for p in prompts],
                task_type.stop(fmt, "propose"),
                args.temperature,
                args.max_new_tokens,
                args.seed,
            )
            proposals = [task_type.parse_proposal(fmt, p, r) for p, r in zip(prompts, responses, strict=True)]
            validations = [f.result() for f in task_type.validate_batch(executor, proposals)]
            parsed = sum(not isinstance(p, BadFormat) for p in proposals)
            valid = sum(v.valid for v in validations)
            rows.append((name, "propose", parsed, valid, args.samples, time.time() - started))
            print(*rows[-1], flush=True)
            for response, validation in list(zip(responses, validations, strict=True))[: args.show]:
                print(f"--- {name} propose [{validation.reason}]\n{response}")
            # Solve shipped seed tasks.
            tasks = rng.sample(pool, args.samples)
            solver_prompts = [
                task_type.solver_prompt(
                    fmt, task, rng.sample([t for t in pool if t is not task], args.examples)
                )
                for task in tasks
            ]
            started = time.time()
            responses = generate(
                backend,
                solver_prompts,
                task_type.stop(fmt, "solve"),
                args.temperature,
                args.max_new_tokens if name == "induction" else args.answer_tokens,
                args.seed,
            )
            answers = [task_type.parse_answer(fmt, r) for r in responses]
            verdicts = task_type.judge_batch(executor, tasks, answers)
            correct = sum(v is not None and v.result().correct for v in verdicts)
            parsed = sum(not isinstance(a, BadFormat) for a in answers)
            rows.append((name, "solve", parsed, correct, args.samples, time.time() - started))
            print(*rows[-1], flush=True)
            for response, answer in list(zip(responses, answers, strict=True))[: args.show]:
                print(f"--- {name} solve [{answer}]\n{response}")

    print(f"\nformat {args.format}/{args.version}, temperature {args.temperature}, seed {args.seed}")
    print(f"{'type':<10} {'role':<8} {'parsed':>8} {'valid/correct':>14} {'seconds':>8}")
    for name, role, parsed, good, total, seconds in rows:
        print(f"{name:<10} {role:<8} {parsed:>4}/{total:<3} {good:>9}/{total:<4} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
