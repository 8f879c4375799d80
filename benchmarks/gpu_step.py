"""One paper-shaped step on a randomly initialised Qwen2.5-3B-shaped model: rollout and update.

The model is built from a transformers `Qwen2Config` with Qwen2.5-3B's dimensions (no weights needed);
the tokenizer is the embedded model's. Rollouts sample every response to the same length (EOS and stop
strings never end them), first with the transformers backend, then, where vLLM is installed, with the
vLLM backend on the same prompts. The update is `policy_update` (recomputed behaviour log-probs, as with
vLLM) on the step's sequences with fixed-length random responses. Prints seconds per phase, tokens/s and
peak GPU memory.

    .venv/bin/python benchmarks/gpu_step.py                              # one GPU, the paper's shape
    .venv/bin/python benchmarks/gpu_step.py --sequences 96 --response-tokens 512
    .venv/bin/python benchmarks/gpu_step.py --device cpu --tiny          # smoke test of the script
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from azr.config import OptimConfig
from azr.engines import GenerationBackend, SamplingParams
from azr.engines.transformers_backend import TransformersBackend
from azr.policy import load_policy, named_model_path
from azr.update import TrainingSequence, make_optimizer, policy_update

QWEN25_3B = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}
TINY = {**QWEN25_3B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TINY.update(num_attention_heads=4, num_key_value_heads=2, vocab_size=49152, max_position_embeddings=4096)
GROUPS = [f"{t}/{r}" for t in ("deduction", "abduction", "induction") for r in ("propose", "solve")]


def build_model(directory: Path, shape: dict, device: str, tokenizer_dir: Path) -> None:
    """Save a random model of `shape` with the given tokenizer; no token ends a generation."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = Qwen2Config(**shape, torch_dtype="bfloat16" if device == "cuda" else "float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    # An id outside the sampled range, so every response runs to its full length.
    model.generation_config.eos_token_id = shape["vocab_size"] - 1
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(len(tokenizer) - 1)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def prompts_of(count: int, tokens: int) -> list[str]:
    rng = random.Random(0)
    words = ["def", "f", "(x)", "return", "x", "+", "1", "assert", "==", "input", "output", "list"]
    return [" ".join(rng.choice(words) for _ in range(tokens)) for _ in range(count)]


def timed_rollout(backend: GenerationBackend, prompts: list[str], tokens: int) -> tuple[float, int]:
    params = SamplingParams(temperature=1.0, max_new_tokens=tokens)
    sync()
    started = time.perf_counter()
    completions = backend.generate(prompts, params, seed=0)
    sync()
    return time.perf_counter() - started, sum(len(c.response_ids) for c in completions)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gb(device: str) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of the process on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, hidden-64 model of the same kind")
    parser.add_argument("--sequences", type=int, default=384, help="trained sequences (paper: 6 x B=64)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--response-tokens", type=int, default=1024)
    parser.add_argument("--rollout-batch", type=int, default=64, help="transformers backend batch size")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument(
        "--tokenizer", type=Path, help="a tokenizer directory (default: the embedded model's)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_step.py: no CUDA GPU here; run it on a GPU machine, or smoke-test with --device cpu --tiny"
        )
        return 2
    shape = TINY if args.tiny else QWEN25_3B
    console = Console()
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory() as folder:
        build_model(Path(folder), shape, args.device, args.tokenizer or named_model_path("embedded"))
        policy = load_policy(
            folder,
            dtype="bfloat16" if args.device == "cuda" else "float32",
            gradient_checkpointing=True,
            device=args.device,
        )
        prompts = prompts_of(args.sequences, args.prompt_tokens)
        backend = TransformersBackend.from_policy(policy, max_batch_size=args.rollout_batch)
        seconds, tokens = timed_rollout(backend, prompts, args.response_tokens)
        rows += [
            ("rollout (transformers) s", f"{seconds:.1f}"),
            ("rollout (transformers) tokens/s", f"{tokens / seconds:.0f}"),
        ]
        rows.append(("peak memory after rollout, GB (GPU; CPU: RSS)", f"{peak_memory_gb(args.device):.2f}"))
        try:
            from azr.engines.vllm_backend import VllmBackend

            vllm_backend = VllmBackend.launch(policy, gpu_memory_utilization=0.3, sleep_level=1, seed=0)
        except ImportError:
            rows.append(("rollout (vLLM)", "not run: vLLM is not installed"))
        except ValueError:
            rows.append(("rollout (vLLM)", "not run: needs CUDA"))
        else:
            seconds, tokens = timed_rollout(vllm_backend, prompts, args.response_tokens)
            rows += [
                ("rollout (vLLM) s", f"{seconds:.1f}"),
                ("rollout (vLLM) tokens/s", f"{tokens / seconds:.0f}"),
            ]

        rng = random.Random(1)
        high = shape["vocab_size"] - 2
        sequences = [
            TrainingSequence(
                GROUPS[i % len(GROUPS)],
                policy.tokenizer(prompt).input_ids,
                [rng.randrange(3, high) for _ in range(args.response_tokens)],
                [0.0] * args.response_tokens,
                rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]),
            )
            for i, prompt in enumerate(prompts)
        ]
        optim = OptimConfig(
            micro_batch_size=args.micro_batch, logprob_chunk_size=512, recompute_logprobs=True
        )
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        started = time.perf_counter()
        result = policy_update(policy, make_optimizer(policy, optim), sequences, optim)
        sync()
        seconds = time.perf_counter() - started
        rows += [
            ("update s", f"{seconds:.1f}"),
            ("update tokens/s (prompt + response)", f"{result.metrics['tokens_per_s/update']:.0f}"),
            ("peak memory in the update, GB (GPU; CPU: RSS)", f"{peak_memory_gb(args.device):.2f}"),
        ]

    name = "tiny Qwen2" if args.tiny else "Qwen2.5-3B-shaped (random weights)"
    table = Table(
        title=f"one step, {name}, {args.device}: {args.sequences} sequences, "
        f"{args.prompt_tokens} prompt + {args.response_tokens} response tokens"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
