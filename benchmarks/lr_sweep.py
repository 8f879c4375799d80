"""How far one update moves the policy at each learning rate, on the same rollouts: the short measured
sweep behind a preset's `optim.lr`.

One self-play step's rollouts are sampled once (proposals, solver batch, learnability samples, rewards).
Then, for each learning rate, the trainable weights go back to the starting ones and one update (fresh
AdamW, `azr.update.policy_update`) is applied to those same sequences. For each rate it reports the mean
change of the trained tokens' log-probabilities, split by the sign of their advantage (a useful update
raises the positive ones and lowers the negative ones), the mean |change| (how far the policy moved),
the update's clip fraction and gradient norm.

    .venv/bin/python benchmarks/lr_sweep.py --config cpu-coder --lrs 1e-6,1e-5,1e-4,1e-3
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from rich.console import Console
from rich.table import Table

from azr.config import load_config
from azr.policy import Policy, pack_sequences, pad_token_id, sequence_logprobs
from azr.rollouts import assign_rewards
from azr.run_dir import RunDir
from azr.trainer import Trainer, training_sequences
from azr.update import TrainingSequence, policy_update


def token_logprobs(policy: Policy, sequences: list[TrainingSequence], chunk: int) -> list[torch.Tensor]:
    """The policy's log-probability of every response token, one tensor per sequence."""
    out = []
    policy.model.eval()
    with torch.no_grad(), policy.autocast():
        for sequence in sequences:
            packed = pack_sequences(
                [sequence.prompt_ids], [sequence.response_ids], pad_token_id(policy.tokenizer)
            )
            logprobs, _ = sequence_logprobs(
                policy.model, packed.input_ids, packed.attention_mask, packed.response_mask, chunk_size=chunk
            )
            out.append(logprobs[0, : len(sequence.response_ids)].float())
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="cpu-coder")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--lrs", default="1e-6,1e-5,1e-4,1e-3")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    rates = [float(rate) for rate in args.lrs.split(",")]

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, RunDir.create(folder, config))
        try:
            trainer.step = 1
            proposals = trainer.propose()
            trainer.check_proposals(proposals)
            trainer.grow_buffers(proposals)
            solutions = trainer.solve(proposals)
            trainer.judge([*solutions, *(s for p in proposals for s in p.learnability)])
            trained = [*proposals, *solutions]
            assign_rewards(trained, config.rewards)
        finally:
            trainer.close()
    policy = trainer.policy
    sequences = training_sequences(trained)
    start = {name: p.detach().clone() for name, p in policy.model.named_parameters() if p.requires_grad}
    chunk = config.optim.logprob_chunk_size
    before = token_logprobs(policy, sequences, chunk)

    table = Table(title=f"one update at each learning rate, same {len(sequences)} sequences ({args.config})")
    for column in (
        "lr",
        "Δ log-prob, A > 0",
        "Δ log-prob, A < 0",
        "mean |Δ log-prob|",
        "clip fraction",
        "grad norm",
    ):
        table.add_column(column, justify="right")
    for rate in rates:
        with torch.no_grad():
            for name, parameter in policy.model.named_parameters():
                if name in start:
                    parameter.copy_(start[name])
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=rate, betas=config.optim.betas)
        result = policy_update(policy, optimizer, sequences, config.optim)
        after = token_logprobs(policy, sequences, chunk)
        deltas = {"+": [], "-": []}
        moved = []
        for advantage, old, new in zip(result.advantages, before, after, strict=True):
            change = (new - old).mean().item()
            moved.append((new - old).abs().mean().item())
            if advantage > 0:
                deltas["+"].append(change)
            elif advantage < 0:
                deltas["-"].append(change)
        table.add_row(
            f"{rate:g}",
            f"{mean(deltas['+']):+.4f}",
            f"{mean(deltas['-']):+.4f}",
            f"{mean(moved):.4f}",
            f"{result.metrics['update/clip_fraction']:.3f}",
            f"{result.metrics['update/grad_norm']:.3f}",
        )
        print(f"lr {rate:g} done", flush=True)
    positive = sum(a > 0 for a in result.advantages)
    negative = sum(a < 0 for a in result.advantages)
    Console().print(table)
    print(f"sequences: A > 0: {positive}, A < 0: {negative}, A = 0: {len(sequences) - positive - negative}")


if __name__ == "__main__":
    main()
