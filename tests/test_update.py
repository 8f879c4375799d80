"""`optim.recompute_logprobs`: the update scores the behaviour log-probs itself and ignores the engine's."""

from __future__ import annotations

from pathlib import Path

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
