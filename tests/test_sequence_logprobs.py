"""sequence_logprobs under bf16 autocast, where the head weight is cast once for every chunk (a frozen
weight, as under LoRA, is otherwise cast again at each call): the values of the model's own bf16 logits."""

from __future__ import annotations

from pathlib import Path

import torch

from azr.policy import LoraSettings, load_policy, naive_sequence_logprobs, pack_sequences, sequence_logprobs


def test_bf16_chunks_give_the_model_s_own_bf16_logprobs(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, dtype="bfloat16", lora=LoraSettings(r=4), device="cpu")
    assert not policy.model.get_output_embeddings().weight.requires_grad
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 1000, (n,), generator=generator).tolist() for n in (5, 9, 2)]
    responses = [torch.randint(3, 1000, (n,), generator=generator).tolist() for n in (7, 3, 10)]
    batch = pack_sequences(prompts, responses, policy.tokenizer.pad_token_id)
    args = (policy.model, batch.input_ids, batch.attention_mask, batch.response_mask)
    with policy.autocast():
        logprobs, entropy = sequence_logprobs(*args, chunk_size=4)
        logprobs.sum().backward()
        with torch.no_grad():
            naive_logprobs, naive_entropy = naive_sequence_logprobs(*args)
    torch.testing.assert_close(logprobs.detach(), naive_logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy.detach(), naive_entropy, rtol=0, atol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.trainable_parameters())
