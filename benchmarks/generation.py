"""Measure rollout throughput and the cost of one policy-gradient forward+backward on a model.

Each measurement runs in its own process so that peak RSS belongs to it alone. On a shared, busy CPU
export OMP_WAIT_POLICY=PASSIVE first: spinning OpenMP threads made decoding 10x slower in our runs.

    python benchmarks/generation.py generate --batch 8 --prompt-tokens 300 --new-tokens 128
    python benchmarks/generation.py train-step --batch 8 --prompt-tokens 128 --response-tokens 256
    python benchmarks/generation.py train-step ... --logprobs naive
    python benchmarks/generation.py train-step ... --logprobs chunked --gradient-checkpointing
    python benchmarks/generation.py generate --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from azr.engines import SamplingParams
from azr.engines.transformers_backend import TransformersBackend
from azr.models import MODELS
from azr.policy import (
    load_policy,
    naive_sequence_logprobs,
    pack_sequences,
    sequence_logprobs,
)

FILLER = (
    "def f(numbers, target):\n"
    "    seen = {}\n"
    "    for index, value in enumerate(numbers):\n"
    "        if target - value in seen:\n"
    "            return (seen[target - value], index)\n"
    "        seen[value] = index\n"
    "    return None\n\n"
    "assert f([2, 7, 11, 15], 9) == (0, 1)\n\n"
)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def prompt_ids(tokenizer, count: int, length: int) -> list[list[int]]:
    """`count` distinct prompts of exactly `length` tokens."""
    base = tokenizer(FILLER * (length // 40 + 2)).input_ids
    return [(tokenizer(f"# sample {i}\n").input_ids + base)[:length] for i in range(count)]


def bench_generate(args: argparse.Namespace) -> None:
    policy = load_policy(args.model, dtype=args.dtype, device="cpu")
    backend = TransformersBackend.from_policy(policy, max_batch_size=args.batch)
    prompts = [
        policy.tokenizer.decode(ids) for ids in prompt_ids(policy.tokenizer, args.batch, args.prompt_tokens)
    ]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)
    backend.generate(prompts[:1], SamplingParams(max_new_tokens=4), seed=0)  # warm-up
    start = time.perf_counter()
    backend.generate(prompts, SamplingParams(max_new_tokens=1), seed=0)
    prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    completions = backend.generate(prompts, params, seed=0)
    seconds = time.perf_counter() - start
    generated = sum(len(c.response_ids) for c in completions)
    prompt_tokens = sum(len(c.prompt_ids) for c in completions)
    decode_rate = (generated - args.batch) / max(seconds - prefill_seconds, 1e-9)
    print(
        f"generate batch={args.batch} prompt_tokens/row={prompt_tokens / args.batch:.0f} dtype={args.dtype} "
        f"generated={generated} tokens in {seconds:.1f} s -> {generated / seconds:.1f} tok/s overall; "
        f"prefill {prefill_seconds:.1f} s, decode {decode_rate:.1f} tok/s; peak RSS {peak_rss_gib():.2f} GiB"
    )


def bench_train_step(args: argparse.Namespace) -> None:
    policy = load_policy(
        args.model, dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing, device="cpu"
    )
    policy.model.train()
    rss_loaded = peak_rss_gib()
    prompts = prompt_ids(policy.tokenizer, args.batch, args.prompt_tokens)
    responses = prompt_ids(policy.tokenizer, args.batch, args.response_tokens + 7)
    responses = [ids[7:] for ids in responses]
    batch = pack_sequences(prompts, responses, policy.tokenizer.pad_token_id)
    inputs = (policy.model, batch.input_ids, batch.attention_mask, batch.response_mask)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        with policy.autocast():
            if args.logprobs == "chunked":
                logprobs, entropy = sequence_logprobs(*inputs, chunk_size=args.chunk_size)
            else:
                logprobs, entropy = naive_sequence_logprobs(*inputs)
        mask = batch.response_mask.float()
        loss = -((logprobs - 0.001 * entropy) * mask).sum() / mask.sum()
        loss.backward()
        policy.model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    print(
        f"train-step {args.logprobs} chunk={args.chunk_size if args.logprobs == 'chunked' else '-'} "
        f"grad_ckpt={args.gradient_checkpointing} dtype={args.dtype} tokens={args.batch}x"
        f"{args.prompt_tokens + args.response_tokens}: step times {', '.join(f'{t:.1f}' for t in times)} s, "
        f"peak RSS {peak_rss_gib():.2f} GiB (after load {rss_loaded:.2f} GiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="rollout tokens/s")
    generate.add_argument("--batch", type=int, default=8)
    generate.add_argument("--prompt-tokens", type=int, default=300)
    generate.add_argument("--new-tokens", type=int, default=128)
    train = commands.add_parser("train-step", help="forward+backward time and peak RSS")
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--prompt-tokens", type=int, default=128)
    train.add_argument("--response-tokens", type=int, default=256)
    train.add_argument("--logprobs", choices=("chunked", "naive"), default="chunked")
    train.add_argument("--chunk-size", type=int, default=256)
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--steps", type=int, default=2)
    for command in (generate, train):
        command.add_argument(
            "--model",
            help=f"a named model ({', '.join(MODELS)}), a model directory or .gguf (default: embedded)",
        )
        command.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
        command.add_argument(
            "--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads"
        )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads={args.threads}, load average before: {os.getloadavg()[0]:.1f}")
    (bench_generate if args.command == "generate" else bench_train_step)(args)


if __name__ == "__main__":
    main()
