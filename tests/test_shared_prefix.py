"""A shared prompt prefix forwarded once in the update: the grouping, and that log-probs, loss and every
trainable parameter's gradient equal those of the whole sequences (tiny random Qwen2, with and without
LoRA, padding, micro-batches, the KL reference, data-parallel shares)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from azr.config import OptimConfig
from azr.distributed import World
from azr.policy import LoraSettings, Policy, load_policy, pack_sequences, pad_token_id, sequence_logprobs
from azr.shared_prefix import (
    PrefixGroup,
    common_prefix_length,
    expanded_cache,
    prefix_key_values,
    shared_prefix_groups,
    supports_prefix_cache,
)
from azr.update import MicroBatchPlan, TrainingSequence, plan_micro_batches, policy_update

# No clipping, so that SGD at lr 1 moves every parameter by exactly its gradient.
OPTIM = OptimConfig(micro_batch_size=2, logprob_chunk_size=8, grad_clip=1e9, entropy_coef=0.01)


# --- grouping ----------------------------------------------------------------------------------------


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_identical_prompts_share_all_but_their_last_token() -> None:
    prompts = [[1, 2, 3, 4, 5]] * 3
    assert shared_prefix_groups(prompts, min_tokens=2) == [PrefixGroup((0, 1, 2), 4)]


def test_a_prompt_inside_another_keeps_its_last_token_out_of_the_prefix() -> None:
    assert shared_prefix_groups([[1, 2, 3, 4, 5, 6], [1, 2, 3]], min_tokens=2) == [PrefixGroup((0, 1), 2)]


def test_prefixes_shorter_than_the_minimum_are_not_shared() -> None:
    prompts = [[1, 2, 3, 9], [1, 2, 4, 9], [7, 8, 9, 9]]
    assert shared_prefix_groups(prompts, min_tokens=3) == [
        PrefixGroup((0,), 0),
        PrefixGroup((1,), 0),
        PrefixGroup((2,), 0),
    ]


def test_the_split_saves_the_most_tokens() -> None:
    header = list(range(100, 110))  # 10 tokens every prompt has
    long = header + list(range(200, 250))  # 60 tokens two prompts share
    prompts = [[*long, 1], [*header, 7, 7], [*long, 2], [*header, 8, 8]]
    # {0, 2} share 60 tokens (saves 60) and {1, 3} 10 (saves 10): 70, more than all four on 10 (30).
    assert shared_prefix_groups(prompts, min_tokens=4) == [PrefixGroup((0, 2), 60), PrefixGroup((1, 3), 10)]
    # Five prompts on the header (4 x 10 = 40) beat two of them apart on 12 tokens (12 + 2 x 10 at most).
    short = [*header, 5, 5]
    prompts = [[*short, 1], [*short, 2], [*header, 3], [*header, 4], [*header, 6]]
    assert shared_prefix_groups(prompts, min_tokens=4) == [PrefixGroup((0, 1, 2, 3, 4), 10)]


def test_groups_partition_the_sequences() -> None:
    rng = random.Random(0)
    headers = [[rng.randrange(50) for _ in range(rng.randint(0, 20))] for _ in range(4)]
    prompts = [rng.choice(headers) + [rng.randrange(50) for _ in range(rng.randint(1, 9))] for _ in range(40)]
    groups = shared_prefix_groups(prompts, min_tokens=3)
    assert sorted(i for group in groups for i in group.members) == list(range(40))
    for group in groups:
        assert (group.length == 0) == (len(group.members) == 1)
        if group.length:
            assert group.length >= 3
            assert all(group.length < len(prompts[i]) for i in group.members)
            first = prompts[group.members[0]][: group.length]
            assert all(prompts[i][: group.length] == first for i in group.members)


def test_micro_batches_without_sharing_are_consecutive_chunks() -> None:
    prompts = [[1, 2, 3]] * 5
    assert plan_micro_batches(prompts, [1] * 5, 2, None) == [MicroBatchPlan(0, [[0, 1], [2, 3], [4]])]


def test_a_group_is_micro_batched_after_its_prefix_shortest_first() -> None:
    header = list(range(10, 30))
    prompts = [[*header, 1, 1, 1], [5, 6, 7], [*header, 2], [*header, 3, 3], [8, 9]]
    responses = [1, 4, 1, 9, 2]
    assert plan_micro_batches(prompts, responses, 2, min_shared=8) == [
        MicroBatchPlan(0, [[1, 4]]),
        MicroBatchPlan(20, [[2, 0], [3]]),
    ]


# --- the tiny model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A 2-layer, hidden-64 Qwen2 (biased q/k/v, grouped-query attention; random weights, seed 0)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tiny_models import save_random_model

    return save_random_model(
        tmp_path_factory.mktemp("tiny-qwen2"),
        tiny_model_dir,
        Qwen2Config,
        Qwen2ForCausalLM,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        use_sliding_window=False,
    )


def tiny_qwen(directory: Path, lora: bool, **kwargs) -> Policy:
    """The tiny Qwen2, optionally with a LoRA adapter drawn from a fixed seed: peft draws A from the
    global generator, and starts B at 0, which would make the gradients of A zero and comparing them
    empty."""
    settings = LoraSettings(r=4, alpha=8) if lora else None
    policy = load_policy(directory, lora=settings, device="cpu", **kwargs)
    generator = torch.Generator().manual_seed(1)
    for name, parameter in policy.model.named_parameters():
        if "lora_" in name:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return policy


def step_sequences(seed: int = 0) -> list[TrainingSequence]:
    """A step's worth of sequences: two groups of identical prompts, a header shared by three more
    prompts, and two prompts of their own; prompts and responses of different lengths."""
    rng = random.Random(seed)

    def tokens(count: int) -> list[int]:
        return [rng.randrange(5, 500) for _ in range(count)]

    header, first, second = tokens(12), tokens(30), tokens(25)
    prompts = [
        *[header + first] * 3,
        *[header + second] * 4,
        *(header + tokens(rng.randint(3, 15)) for _ in range(3)),
        tokens(20),
        tokens(9),
    ]
    sequences = []
    for i, prompt in enumerate(prompts):
        response = tokens(rng.randint(1, 12))
        sequences.append(
            TrainingSequence(
                group=("deduction/propose", "deduction/solve", "abduction/solve")[i % 3],
                prompt_ids=prompt,
                response_ids=response,
                # About what the random model gives its tokens (~ -ln vocab): some ratios inside the clip.
                logprobs=[-rng.uniform(10.6, 11.0) for _ in response],
                reward=rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]),
            )
        )
    return sequences


def parameter_steps(policy: Policy, sequences, optim: OptimConfig, world=None, **kwargs):
    """The update's metrics, and every trainable parameter's change under SGD at lr 1: its gradient."""
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(policy.trainable_parameters(), lr=1.0)
    extra = {"world": world} if world is not None else {}
    result = policy_update(policy, optimizer, sequences, optim, **extra, **kwargs)
    after = dict(policy.model.named_parameters())
    return result.metrics, {name: before[name] - after[name].detach() for name in before}


def assert_same_gradients(shared: dict, plain: dict) -> None:
    assert shared.keys() == plain.keys()
    assert any(gradient.abs().max() > 1e-4 for gradient in plain.values())
    for name, gradient in plain.items():
        torch.testing.assert_close(shared[name], gradient, atol=1e-5, rtol=0, msg=name)


# --- exactness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True])
def test_prefix_cache_gives_the_whole_sequences_logprobs(tiny_qwen_dir: Path, lora: bool) -> None:
    policy = tiny_qwen(tiny_qwen_dir, lora)
    assert supports_prefix_cache(policy.model)
    prefix, suffixes = [7, 8, 9, 10, 11, 12], [[20, 21, 22], [30]]
    responses = [[40, 41], [50, 51, 52, 53]]
    pad = pad_token_id(policy.tokenizer)
    whole = pack_sequences([prefix + s for s in suffixes], responses, pad)
    parts = pack_sequences(suffixes, responses, pad)
    with torch.no_grad():
        expected = sequence_logprobs(policy.model, whole.input_ids, whole.attention_mask, whole.response_mask)
        key_values = prefix_key_values(policy.model, torch.tensor([prefix]))
        mask = torch.cat([torch.ones(2, len(prefix), dtype=torch.long), parts.attention_mask], dim=1)
        got = sequence_logprobs(
            policy.model,
            parts.input_ids,
            mask,
            parts.response_mask,
            past_key_values=expanded_cache(key_values, 2),
        )
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("lora", "recompute"), [(False, True), (True, True), (True, False), (False, False)])
def test_shared_prefix_update_equals_the_whole_sequences_update(
    tiny_qwen_dir: Path, lora: bool, recompute: bool
) -> None:
    sequences = step_sequences()
    results = {}
    for share in (True, False):
        optim = OPTIM.model_copy(update={"share_prompt_prefix": share, "recompute_logprobs": recompute})
        results[share] = parameter_steps(tiny_qwen(tiny_qwen_dir, lora), sequences, optim)
    (shared_metrics, shared), (plain_metrics, plain) = results[True], results[False]
    assert_same_gradients(shared, plain)
    for key in ("update/loss", "update/policy", "update/entropy", "update/ratio", "update/grad_norm"):
        assert shared_metrics[key] == pytest.approx(plain_metrics[key], abs=1e-6), key
    # Three prefixes (37, 36 and 12 tokens) forwarded once instead of 3, 4 and 3 times.
    assert shared_metrics["update/forward_positions"] < plain_metrics["update/forward_positions"] - 150


@pytest.mark.parametrize("share", [True, False])
def test_masked_response_tokens_are_left_out_of_the_loss_exactly(tiny_qwen_dir: Path, share: bool) -> None:
    from dataclasses import replace

    from azr.advantages import trr_advantages

    rng = random.Random(3)
    sequences = [
        replace(s, trained=[rng.random() < 0.6 for _ in s.response_ids]) for s in step_sequences(seed=2)
    ]
    optim = OPTIM.model_copy(
        update={"recompute_logprobs": True, "entropy_coef": 0.0, "share_prompt_prefix": share}
    )
    metrics, masked = parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), sequences, optim)
    # The plain computation: at ratio 1 the PPO-clip gradient is -A ∇log p, averaged over kept tokens.
    policy = tiny_qwen(tiny_qwen_dir, lora=True)
    rewards = torch.tensor([s.reward for s in sequences])
    advantages = trr_advantages(rewards, [s.group for s in sequences], eps=optim.advantage_eps)
    kept = sum(sum(s.trained) for s in sequences)
    pad = pad_token_id(policy.tokenizer)
    for sequence, advantage in zip(sequences, advantages, strict=True):
        packed = pack_sequences([sequence.prompt_ids], [sequence.response_ids], pad)
        logprobs, _ = sequence_logprobs(
            policy.model, packed.input_ids, packed.attention_mask, packed.response_mask
        )
        keep = torch.tensor(sequence.trained)
        (-(advantage * logprobs[0][keep]).sum() / kept).backward()
    plain = {n: p.grad for n, p in policy.model.named_parameters() if p.requires_grad}
    assert_same_gradients(masked, plain)
    assert metrics["update/tokens"] == kept < sum(len(s.response_ids) for s in sequences)
    # Every token kept is the unmasked update.
    everything = [replace(s, trained=[True] * len(s.response_ids)) for s in sequences]
    unmasked = [replace(s, trained=None) for s in sequences]
    assert_same_gradients(
        parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), everything, optim)[1],
        parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), unmasked, optim)[1],
    )


def test_kl_reference_shares_the_prefix_too(tiny_qwen_dir: Path) -> None:
    sequences = step_sequences(seed=1)
    optim = OPTIM.model_copy(update={"kl_coef": 0.5})
    reference = tiny_qwen(tiny_qwen_dir, lora=False).model.requires_grad_(False).eval()
    results = {}
    for share in (True, False):
        policy = tiny_qwen(tiny_qwen_dir, lora=True)
        # The policy starts away from the reference, so the KL term has a gradient.
        for name, parameter in policy.model.named_parameters():
            if "lora_A" in name:
                parameter.data.mul_(3.0)
        update = optim.model_copy(update={"share_prompt_prefix": share})
        results[share] = parameter_steps(policy, sequences, update, reference_model=reference)
    assert results[False][0]["update/kl"] > 1e-4
    assert results[True][0]["update/kl"] == pytest.approx(results[False][0]["update/kl"], abs=1e-7)
    assert_same_gradients(results[True][1], results[False][1])


@dataclass(frozen=True)
class OneRankOfTwo(World):
    """One rank's share of a two-rank job, run alone: its collectives are left to the test."""

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        pass

    def sum_floats(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        return values

    def replica_divergence(self, parameters: Iterable[torch.nn.Parameter]) -> float:
        return 0.0


def test_data_parallel_shares_with_shared_prefixes_sum_to_the_single_process_gradient(
    tiny_qwen_dir: Path,
) -> None:
    sequences = step_sequences(seed=2)
    _, single = parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), sequences, OPTIM)
    shares = [
        parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), sequences, OPTIM, OneRankOfTwo(rank, 2))[1]
        for rank in range(2)
    ]
    assert_same_gradients({name: shares[0][name] + shares[1][name] for name in single}, single)


def test_gradient_checkpointing_forwards_whole_sequences(tiny_qwen_dir: Path) -> None:
    # transformers' checkpointed layers drop the cache, so the prefix cannot be reused there.
    policy = tiny_qwen(tiny_qwen_dir, lora=True, gradient_checkpointing=True)
    assert not supports_prefix_cache(policy.model)
    sequences = step_sequences(seed=3)
    metrics, checkpointed = parameter_steps(policy, sequences, OPTIM)
    unshared = OPTIM.model_copy(update={"share_prompt_prefix": False})
    reference_metrics, reference = parameter_steps(tiny_qwen(tiny_qwen_dir, lora=True), sequences, unshared)
    assert_same_gradients(checkpointed, reference)
    assert metrics["update/forward_positions"] == reference_metrics["update/forward_positions"]


def test_a_model_that_drops_the_cache_is_an_error_not_a_wrong_answer(tiny_qwen_dir: Path) -> None:
    policy = tiny_qwen(tiny_qwen_dir, lora=False, gradient_checkpointing=True)
    prefix = torch.tensor([[7, 8, 9]])
    key_values = prefix_key_values(policy.model.eval(), prefix)  # checkpointing is for training only
    policy.model.train()
    with pytest.raises(RuntimeError, match="did not fill the prefix cache"):
        prefix_key_values(policy.model, prefix)
    parts = pack_sequences([[20, 21]], [[40, 41]], pad_token_id(policy.tokenizer))
    mask = torch.cat([torch.ones(1, 3, dtype=torch.long), parts.attention_mask], dim=1)
    with pytest.raises(ValueError, match="drop past_key_values"):
        sequence_logprobs(
            policy.model,
            parts.input_ids,
            mask,
            parts.response_mask,
            past_key_values=expanded_cache(key_values, 1),
        )
