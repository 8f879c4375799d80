"""`optim.recompute_logprobs`: the update scores the behaviour log-probs itself and ignores the engine's,
in the forward pass it trains with."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from azr.config import OptimConfig
from azr.policy import load_policy, pack_sequences, pad_token_id, sequence_logprobs
from azr.update import TrainingSequence, policy_update


def test_recomputed_logprobs_give_the_update_of_exact_behaviour_logprobs(tiny_model_dir: Path) -> None:
    prompts = [[11, 12, 13, 14], [21, 22], [31, 32, 33]]
    responses = [[41, 42, 43], [51, 52, 53, 54, 55], [61]]
    probe = load_policy(tiny_model_dir, device="cpu")
    exact = []
    for prompt, response in zip(prompts, responses, strict=True):
        packed = pack_sequences([prompt], [response], pad_token_id(probe.tokenizer))
        with torch.no_grad():
            logprobs, _ = sequence_logprobs(
                probe.model, packed.input_ids, packed.attention_mask, packed.response_mask
            )
        exact.append(logprobs[0].tolist())

    def update(logprobs: list[list[float]], recompute: bool) -> dict[str, torch.Tensor]:
        optim = OptimConfig(micro_batch_size=2, recompute_logprobs=recompute)
        policy = load_policy(tiny_model_dir, device="cpu")
        sequences = [
            TrainingSequence(group, p, r, lp, reward)
            for group, p, r, lp, reward in zip(
                ["a", "a", "b"], prompts, responses, logprobs, [1.0, -1.0, 0.5], strict=True
            )
        ]
        # SGD at lr 1 makes the parameter change the gradient itself (see tests/test_distributed.py).
        policy_update(policy, torch.optim.SGD(policy.trainable_parameters(), lr=1.0), sequences, optim)
        return {n: p.detach().clone() for n, p in policy.model.named_parameters()}

    stale = [[-9.0] * len(r) for r in responses]  # what another engine's numbers might look like, exaggerated
    recomputed, reference = update(stale, recompute=True), update(exact, recompute=False)
    for name, value in reference.items():
        torch.testing.assert_close(recomputed[name], value, atol=1e-6, rtol=0)
    assert any(not torch.equal(update(stale, recompute=False)[n], reference[n]) for n in reference)


def test_the_update_forward_gives_the_behaviour_logprobs_of_a_separate_pass(tiny_model_dir: Path) -> None:
    """One optimizer step per self-play step: the parameters have not moved, so the update's own forward,
    detached, scores what a separate no-grad pass scores (the update before issue 17), and the ratio is 1."""
    rng = random.Random(0)
    sequences = [
        TrainingSequence(
            group=("a", "b")[i % 2],
            prompt_ids=[rng.randrange(5, 500) for _ in range(rng.randint(2, 9))],
            response_ids=[rng.randrange(5, 500) for _ in range(length)],
            logprobs=[-rng.uniform(10.0, 11.5) for _ in range(length)],
            reward=rng.choice([-1.0, 0.0, 1.0]),
        )
        for i, length in enumerate([3, 7, 1, 5, 4])
    ]
    runs = {}
    for separate in (True, False):
        optim = OptimConfig(
            micro_batch_size=2, recompute_logprobs=True, separate_logprob_pass=separate, entropy_coef=0.01
        )
        policy = load_policy(tiny_model_dir, device="cpu")
        result = policy_update(
            policy, torch.optim.SGD(policy.trainable_parameters(), lr=1.0), sequences, optim
        )
        runs[separate] = result.metrics, {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    (separate_metrics, separate), (metrics, detached) = runs[True], runs[False]
    for name, value in separate.items():
        torch.testing.assert_close(detached[name], value, atol=1e-6, rtol=0)
    assert metrics["update/ratio"] == pytest.approx(1.0, abs=1e-12)  # a sum of shares of exactly 1
    assert metrics["update/clip_fraction"] == 0.0
    # What the engine's log-probs would have given: the same in both, and far from 1 for these.
    assert metrics["update/engine_ratio"] == pytest.approx(separate_metrics["update/engine_ratio"], rel=1e-5)
    assert metrics["update/engine_clip_fraction"] > 0.0
