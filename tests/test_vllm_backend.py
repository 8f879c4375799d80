"""The vLLM rollout backend against a fake engine with the vLLM API surface it uses (vLLM itself needs a
GPU and is not installed here): the generation contract of `azr.engines.base`, weight pushes after an
update (LoRA merged), sleep/wake between rollouts, and the errors of a missing vLLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config import ConfigError, load_config
from azr.engines import SamplingParams, make_backend
from azr.engines.vllm_backend import VllmBackend
from azr.policy import LoraSettings, load_policy


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]
    finish_reason: str
    stop_reason: str | int | None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@dataclass
class EngineModel:
    """Stands in for the engine's model: `load_weights` takes (name, tensor) pairs, as vLLM's models do."""

    loaded: dict[str, torch.Tensor] = field(default_factory=dict)

    def load_weights(self, weights) -> None:
        self.loaded.update({name: tensor.detach().clone() for name, tensor in weights})


class FakeLLM:
    """Continues each prompt with `replies[prompt text]` (plus EOS when `eos` is set) and ends it the way
    vLLM does: EOS kept in token_ids, text cut before a stop string whose completing token stays in
    token_ids, finish_reason "stop" for both with stop_reason None or the string, "length" at max_tokens."""

    def __init__(self, tokenizer, replies: dict[str, tuple[str, bool]]) -> None:
        self.tokenizer = tokenizer
        self.replies = replies
        self.model = EngineModel()
        self.asleep: set[str] = set()
        self.events: list[str] = []
        self.requests: list[FakeSamplingParams] = []

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert not self.asleep, f"generate while {self.asleep} asleep"
        self.events.append("generate")
        self.requests += sampling_params
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, sampling_params, strict=True)]

    def _one(self, prompt_ids: list[int], params: FakeSamplingParams) -> RequestOutput:
        text, eos = self.replies[self.tokenizer.decode(prompt_ids, skip_special_tokens=True)]
        planned = self.tokenizer(text, add_special_tokens=False).input_ids
        planned += [self.tokenizer.eos_token_id] if eos else []
        token_ids: list[int] = []
        for token in planned:
            token_ids.append(token)
            decoded = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            hits = [decoded.index(s) for s in params.stop if s in decoded]
            if token == self.tokenizer.eos_token_id:
                return self._output(prompt_ids, decoded, token_ids, "stop", None)
            if hits:
                stop = next(s for s in params.stop if decoded.index(s) == min(hits))
                return self._output(prompt_ids, decoded[: min(hits)], token_ids, "stop", stop)
            if len(token_ids) == params.max_tokens:
                return self._output(prompt_ids, decoded, token_ids, "length", None)
        raise AssertionError("scripted reply ran out before any end condition")

    @staticmethod
    def _output(prompt_ids, text, token_ids, finish_reason, stop_reason) -> RequestOutput:
        logprobs = [{token: Logprob(-0.1 * (i + 1))} for i, token in enumerate(token_ids)]
        completion = CompletionOutput(text, list(token_ids), logprobs, finish_reason, stop_reason)
        return RequestOutput(prompt_ids, [completion])

    def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep{level}")
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append(f"wake:{','.join(tags or ['all'])}")
        self.asleep -= set(tags or self.asleep)

    def apply_model(self, func) -> list[Any]:
        assert "weights" not in self.asleep, "weights loaded into a sleeping engine"
        self.events.append("load_weights")
        return [func(self.model)]


REPLIES = {
    "assert f(1) ==": (" 2\nassert f(3) == 4", False),
    "Hello": (" world", True),
    "Count:": (" one two three four five six", False),
}


def backend_on(policy, replies=REPLIES, sleep_level: int = 0) -> tuple[VllmBackend, FakeLLM]:
    engine = FakeLLM(policy.tokenizer, replies)
    return VllmBackend(
        engine, FakeSamplingParams, policy.model, policy.tokenizer, sleep_level=sleep_level
    ), engine


def test_generation_contract_stop_eos_length_and_prompt_order(tiny_policy) -> None:
    backend, engine = backend_on(tiny_policy)
    params = [
        SamplingParams(max_new_tokens=20, stop=("\nassert",)),
        SamplingParams(max_new_tokens=20),
        SamplingParams(max_new_tokens=3, temperature=0.5, top_p=0.9),
    ]
    stopped, ended, cut = backend.generate(list(REPLIES), params, seed=7)
    tokenizer = tiny_policy.tokenizer

    assert [c.prompt for c in (stopped, ended, cut)] == list(REPLIES)
    assert stopped.prompt_ids == tokenizer("assert f(1) ==").input_ids
    assert stopped.finish_reason == "stop" and stopped.text == " 2"
    decoded = tokenizer.decode(stopped.response_ids, skip_special_tokens=True)
    assert decoded.startswith(stopped.text + "\nassert"), "the stop string's tokens stay in response_ids"
    assert ended.finish_reason == "eos" and ended.text == " world"
    assert ended.response_ids[-1] == tokenizer.eos_token_id
    assert cut.finish_reason == "length" and len(cut.response_ids) == 3
    for completion in (stopped, ended, cut):
        assert len(completion.logprobs) == len(completion.response_ids)
        assert tokenizer.decode(completion.response_ids, skip_special_tokens=True).startswith(completion.text)
    sent = engine.requests
    assert [p.max_tokens for p in sent] == [20, 20, 3]
    assert (sent[2].temperature, sent[2].top_p, sent[2].logprobs) == (0.5, 0.9, 0)
    assert [p.seed for p in sent] == [7, 8, 9]
    assert sent[0].stop == ["\nassert"] and not sent[0].include_stop_str_in_output


def test_update_weights_pushes_the_changed_weights(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu")
    backend, engine = backend_on(policy)
    name, parameter = next((n, p) for n, p in policy.model.named_parameters() if n.endswith("q_proj.weight"))
    with torch.no_grad():
        parameter.add_(0.25)
    backend.update_weights(policy.model)
    assert torch.equal(engine.model.loaded[name], parameter.detach())
    assert engine.model.loaded.keys() == policy.model.state_dict().keys()


def test_lora_weights_arrive_merged_under_base_names(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu", lora=LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    backend, engine = backend_on(policy)
    backend.update_weights(policy.model)

    plain = load_policy(tiny_model_dir, device="cpu").model.state_dict()
    assert engine.model.loaded.keys() == plain.keys()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(engine.model.loaded[key], plain[key]), "the adapter is folded in"
    assert torch.equal(engine.model.loaded["model.norm.weight"], plain["model.norm.weight"])
    after = dict(policy.model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before), "the trainer's model is left unmerged"


def test_sleeps_after_rollouts_and_wakes_what_each_call_needs(tiny_policy) -> None:
    prompt = ["Hello"]
    backend, engine = backend_on(tiny_policy, sleep_level=1)
    backend.generate(prompt, SamplingParams(max_new_tokens=5))
    backend.update_weights(tiny_policy.model)
    backend.generate(prompt, SamplingParams(max_new_tokens=5))
    assert engine.events == [
        "generate", "sleep1",
        "wake:weights", "load_weights",
        "wake:kv_cache", "generate", "sleep1",
    ]  # fmt: skip

    backend, engine = backend_on(tiny_policy, sleep_level=2)
    backend.generate(prompt, SamplingParams(max_new_tokens=5))
    backend.generate(prompt, SamplingParams(max_new_tokens=5))
    # Level 2 forgets the weights, so waking for a rollout pushes them again.
    assert engine.events == [
        "generate", "sleep2",
        "wake:weights", "load_weights", "wake:kv_cache", "generate", "sleep2",
    ]  # fmt: skip


def test_vllm_backend_needs_recomputed_logprobs_and_says_how_to_install(tiny_policy) -> None:
    with pytest.raises(ConfigError, match="recompute_logprobs"):
        load_config("tiny-cpu", ["generation.backend=vllm"])
    config = load_config("tiny-cpu", ["generation.backend=vllm", "optim.recompute_logprobs=true"])
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"azr\[gpu\]"):
            make_backend(config.generation, tiny_policy)
    else:
        pytest.skip("vLLM is installed: the missing-vLLM message cannot be shown")
