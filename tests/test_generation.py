"""The transformers and snapshot backends beyond the engine contract (test_engine_contract.py): micro-batches,
training mode, top-p, chat prompts, LoRA, and the snapshot copies' weight refresh."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from azr.engines import Completion, SamplingParams, chat_prompt
from azr.engines.snapshot import SnapshotBackend
from azr.engines.transformers_backend import TransformersBackend, _top_p_filter
from azr.policy import LoraSettings, Policy, load_policy, pack_sequences, sequence_logprobs

PROMPTS = [
    "def f(a):\n    return a[::-1]\n\nassert f('abc') ==",
    "Hello",
    "The quick brown fox jumps over the lazy dog. " * 3,
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


def _recomputed_logprobs(model: torch.nn.Module, tokenizer, completions: list[Completion]) -> torch.Tensor:
    batch = pack_sequences(
        [c.prompt_ids for c in completions],
        [c.response_ids for c in completions],
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask)
    return logprobs.float()


def test_micro_batches_give_the_same_greedy_results(tiny_policy: Policy) -> None:
    prompts = [*PROMPTS, "x = 1", "for i in range(3):"]
    one_by_one = TransformersBackend.from_policy(tiny_policy, max_batch_size=1).generate(prompts, GREEDY)
    all_at_once = TransformersBackend.from_policy(tiny_policy, max_batch_size=8).generate(prompts, GREEDY)
    assert [c.response_ids for c in one_by_one] == [c.response_ids for c in all_at_once]


def test_generation_restores_training_mode(tiny_policy: Policy, tiny_backend: TransformersBackend) -> None:
    tiny_policy.model.train()
    try:
        tiny_backend.generate(["Hi"], SamplingParams(max_new_tokens=2), seed=0)
        assert tiny_policy.model.training
    finally:
        tiny_policy.model.eval()


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    probs = torch.tensor([[0.125, 0.5, 0.375], [0.125, 0.5, 0.375]])
    filtered = _top_p_filter(probs, torch.tensor([0.6, 1.0]))
    assert filtered.tolist() == [[0.0, 0.5, 0.375], [0.125, 0.5, 0.375]]


def test_invalid_sampling_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="non-empty"):
        SamplingParams(stop=("",))


def test_chat_prompt_uses_the_template(tiny_backend: TransformersBackend) -> None:
    prompt = chat_prompt(tiny_backend.tokenizer, "What is 2 + 2?", system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_prompt_without_template_is_a_clear_error(tiny_backend: TransformersBackend) -> None:
    tokenizer = copy.copy(tiny_backend.tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tokenizer, "hi")


def test_lora_policy_generates_with_consistent_logprobs(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, lora=LoraSettings(r=4), device="cpu")
    backend = TransformersBackend.from_policy(policy)
    completions = backend.generate(PROMPTS[:2], SamplingParams(max_new_tokens=5), seed=0)
    recomputed = _recomputed_logprobs(policy.model, policy.tokenizer, completions)
    for row, completion in enumerate(completions):
        assert len(completion.response_ids) == 5
        torch.testing.assert_close(recomputed[row], torch.tensor(completion.logprobs), rtol=0, atol=1e-4)


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_snapshot_backends_generate_from_the_weights_of_the_last_update(
    tiny_model_dir: Path, weights
) -> None:
    policy = load_policy(tiny_model_dir, device="cpu")
    backend = SnapshotBackend(policy, weights=weights, max_batch_size=4)
    before = [c.response_ids for c in backend.generate(PROMPTS, GREEDY)]
    with torch.no_grad():  # what an optimizer step does, made large enough to change greedy choices
        for parameter in policy.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    assert [c.response_ids for c in backend.generate(PROMPTS, GREEDY)] == before, "a copy until updated"
    backend.update_weights(policy.model)
    after = [c.response_ids for c in backend.generate(PROMPTS, GREEDY)]
    assert after != before
    fresh = SnapshotBackend(policy, weights=weights, max_batch_size=4)
    assert after == [c.response_ids for c in fresh.generate(PROMPTS, GREEDY)]


def test_snapshot_backend_merges_lora_adapters(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu", lora=LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn_like(parameter))
    backend = SnapshotBackend(policy, weights="bfloat16")
    engine = backend.model.state_dict()
    assert not any("lora" in name for name in engine)
    merged = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    base = load_policy(tiny_model_dir, device="cpu").model.state_dict()
    assert engine.keys() == merged.keys()
    for name, weight in merged.items():
        assert torch.equal(engine[name], weight.to(torch.bfloat16)), name
    adapted = [name for name in merged if not torch.equal(merged[name], base[name])]
    assert adapted and all("proj" in name for name in adapted)
    # After a training step, the sync merges the changed adapter the same way.
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_A" in name:
                parameter.mul_(-1.0)
    backend.update_weights(policy.model)
    merged = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    synced = backend.model.state_dict()
    for name, weight in merged.items():
        torch.testing.assert_close(synced[name], weight.to(torch.bfloat16), rtol=0, atol=0, msg=name)
