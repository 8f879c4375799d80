"""Model loading, LoRA, checkpoints and memory-bounded log-probs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from azr import policy as policy_module
from azr.engines import SamplingParams, chat_prompt
from azr.engines.transformers_backend import TransformersBackend
from azr.models import NamedModel
from azr.policy import (
    CONVERSION_MARKER,
    POLICY_MANIFEST,
    LoraSettings,
    ModelLoadError,
    load_policy,
    naive_sequence_logprobs,
    named_model_path,
    pack_sequences,
    save_policy_weights,
    sequence_logprobs,
)


def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def _randomise_lora(model: torch.nn.Module) -> None:
    """LoRA's B matrices start at zero; give them values so the adapter changes the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


# --- loading errors ---------------------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_policy(tmp_path / "nowhere")


def test_directory_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"without config\.json"):
        load_policy(tmp_path)


def test_hub_id_explains_that_azr_is_offline() -> None:
    with pytest.raises(ModelLoadError, match="offline"):
        load_policy("Qwen/Qwen2.5-7B")


def test_file_that_is_not_gguf_is_rejected(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf"):
        load_policy(weights)


def test_unknown_dtype_is_rejected(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="dtype"):
        load_policy(tiny_model_dir, dtype="float16")  # type: ignore[arg-type]


@pytest.mark.parametrize("device", [None, "auto", "cpu", torch.device("cpu")])
def test_device_is_read_as_the_config_reads_it(tiny_model_dir: Path, device, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_policy(tiny_model_dir, device=device).device == torch.device("cpu")


def test_corrupt_config_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="Could not load"):
        load_policy(tmp_path)


# --- named model cache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"),
    [("embedded", "smollm2-135m-instruct"), ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct")],
)
def test_named_model_conversion_is_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str
) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(NamedModel, "require_gguf", lambda self: tmp_path / "fake.gguf")

    def interrupted(gguf_path: Path, destination: Path) -> None:
        (destination / "model.safetensors").write_bytes(b"half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(policy_module, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        named_model_path(name)
    models = tmp_path / "models"
    assert list(models.iterdir()) == [], "an interrupted conversion must leave nothing behind"

    converted = []

    def complete(gguf_path: Path, destination: Path) -> None:
        converted.append(gguf_path)
        (destination / "config.json").write_text("{}")

    monkeypatch.setattr(policy_module, "_convert_gguf", complete)
    target = named_model_path(name)
    assert target == models / folder
    assert (target / CONVERSION_MARKER).is_file() and (target / "config.json").is_file()
    assert named_model_path(name) == target
    assert len(converted) == 1, "a complete cache is reused, not converted again"
    assert [p.name for p in models.iterdir()] == [folder]


def test_missing_embedded_wheel_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("azr.models.registry.importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as raised:
        load_policy("embedded")
    assert str(raised.value) == (
        "embedded is not installed: run `make setup` (or `azr models install embedded`)"
    )


def test_named_model_not_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZR_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError) as raised:
        load_policy("qwen2.5-coder-0.5b")
    assert str(raised.value) == (
        "qwen2.5-coder-0.5b is not installed: run `make model` (or `azr models install qwen2.5-coder-0.5b`)"
    )
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_unknown_name_lists_the_named_models() -> None:
    with pytest.raises(ModelLoadError, match=r"named model \(embedded, qwen2\.5-coder-0\.5b\)"):
        load_policy("qwen-9000")


@pytest.mark.slow
def test_embedded_model_loads_from_cache_and_generates() -> None:
    policy = load_policy(device="cpu")
    cached = named_model_path("embedded")
    config = json.loads((cached / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert policy.tokenizer.padding_side == "left" and policy.tokenizer.pad_token_id is not None
    assert policy.tokenizer.eos_token_id in policy.model.generation_config.eos_token_id
    backend = TransformersBackend.from_policy(policy)
    prompts = ["The capital of France is", chat_prompt(policy.tokenizer, "What is the capital of France?")]
    completion, chat = backend.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12))
    assert completion.text.startswith(" Paris") and completion.finish_reason == "length"
    assert "Paris" in chat.text and chat.finish_reason == "eos"


# --- training setup ---------------------------------------------------------------------------------


def test_full_finetuning_trains_every_parameter(tiny_policy) -> None:
    assert tiny_policy.lora is None
    assert len(tiny_policy.trainable_parameters()) == len(list(tiny_policy.model.parameters()))
    assert all(p.dtype == torch.float32 for p in tiny_policy.model.parameters())


def test_lora_trains_only_the_adapter(tiny_model_dir: Path) -> None:
    settings = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
    policy = load_policy(tiny_model_dir, lora=settings, device="cpu")
    trainable = {name for name, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert all(("q_proj" in name or "v_proj" in name) for name in trainable)
    assert any(not p.requires_grad for p in policy.model.parameters())
    assert len(policy.trainable_parameters()) == len(trainable)


def test_lora_with_unknown_targets_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="target modules"):
        load_policy(tiny_model_dir, lora=LoraSettings(target_modules=("no_such_layer",)), device="cpu")


def test_bf16_autocast_keeps_float32_master_weights(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())
    with policy.autocast():
        logits = policy.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16


# --- checkpoints ------------------------------------------------------------------------------------


def test_full_weights_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    policy = load_policy(tiny_model_dir, device="cpu")
    with torch.no_grad():
        policy.model.model.layers[0].mlp.up_proj.weight.add_(0.1)
    saved = save_policy_weights(policy, tmp_path / "checkpoint")
    restored = load_policy(saved, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(_logits(restored.model, ids), _logits(policy.model, ids))
    assert restored.tokenizer.padding_side == "left"


def test_lora_checkpoint_resumes_as_adapter_or_loads_merged(tiny_model_dir: Path, tmp_path: Path) -> None:
    policy = load_policy(tiny_model_dir, lora=LoraSettings(r=4), device="cpu")
    _randomise_lora(policy.model)
    saved = save_policy_weights(policy, tmp_path / "checkpoint")
    assert (saved / "adapter_model.safetensors").is_file()
    assert not (saved / "model.safetensors").exists(), "a LoRA checkpoint stores only the adapter"
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = _logits(policy.model, ids)

    resumed = load_policy(saved, lora=LoraSettings(), device="cpu")
    assert resumed.lora is not None and resumed.lora.r == 4
    assert resumed.source == str(tiny_model_dir.resolve())
    assert resumed.trainable_parameters() and all(p.requires_grad for p in resumed.trainable_parameters())
    torch.testing.assert_close(_logits(resumed.model, ids), expected)

    merged = load_policy(saved, device="cpu")
    assert merged.lora is None
    assert not any("lora_" in name for name, _ in merged.model.named_parameters())
    torch.testing.assert_close(_logits(merged.model, ids), expected, rtol=1e-4, atol=1e-4)


def test_lora_checkpoint_of_a_named_model_resumes_through_the_name(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny model stands in for the converted named model: what is tested is that the checkpoint
    # records the name, not a cache path, and finds its base through the registry again.
    monkeypatch.setattr(policy_module, "named_model_path", lambda name: tiny_model_dir)
    policy = load_policy("qwen2.5-coder-0.5b", lora=LoraSettings(r=4), device="cpu")
    assert policy.source == "qwen2.5-coder-0.5b"
    _randomise_lora(policy.model)
    saved = save_policy_weights(policy, tmp_path / "checkpoint")
    assert json.loads((saved / POLICY_MANIFEST).read_text())["base_model"] == "qwen2.5-coder-0.5b"

    resumed = load_policy(saved, lora=LoraSettings(), device="cpu")
    assert resumed.source == "qwen2.5-coder-0.5b" and resumed.lora is not None
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(_logits(resumed.model, ids), _logits(policy.model, ids))


# --- log-probs --------------------------------------------------------------------------------------


def _packed_batch(pad_token_id: int):
    generator = torch.Generator().manual_seed(0)
    lengths = [(5, 7), (9, 3), (2, 10)]
    prompts = [torch.randint(3, 1000, (p,), generator=generator).tolist() for p, _ in lengths]
    responses = [torch.randint(3, 1000, (r,), generator=generator).tolist() for _, r in lengths]
    return pack_sequences(prompts, responses, pad_token_id)


def test_pack_sequences_left_pads_prompts_and_right_pads_responses() -> None:
    batch = pack_sequences([[1, 2], [3]], [[4], [5, 6, 7]], pad_token_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 4, 0, 0], [0, 3, 5, 6, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[True, False, False], [True, True, True]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_match_naive_values_and_gradients(tiny_model_dir: Path, temperature: float) -> None:
    policy = load_policy(tiny_model_dir, device="cpu")
    batch = _packed_batch(policy.tokenizer.pad_token_id)
    args = (policy.model, batch.input_ids, batch.attention_mask, batch.response_mask)

    chunked_lp, chunked_entropy = sequence_logprobs(*args, temperature=temperature, chunk_size=4)
    (chunked_lp.sum() + chunked_entropy.sum()).backward()
    chunked_grads = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()

    naive_lp, naive_entropy = naive_sequence_logprobs(*args, temperature=temperature)
    (naive_lp.sum() + naive_entropy.sum()).backward()
    naive_grads = [p.grad.clone() for p in policy.model.parameters()]

    torch.testing.assert_close(chunked_lp, naive_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked_entropy, naive_entropy, rtol=0, atol=1e-5)
    assert (chunked_lp[~batch.response_mask] == 0).all()
    assert (chunked_lp[batch.response_mask] < 0).all()
    for chunked, naive in zip(chunked_grads, naive_grads, strict=True):
        torch.testing.assert_close(chunked, naive, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in chunked_grads)


def test_chunked_logprobs_with_lora_and_gradient_checkpointing(tiny_model_dir: Path) -> None:
    policy = load_policy(tiny_model_dir, lora=LoraSettings(r=4), gradient_checkpointing=True, device="cpu")
    _randomise_lora(policy.model)
    policy.model.train()
    batch = _packed_batch(policy.tokenizer.pad_token_id)
    args = (policy.model, batch.input_ids, batch.attention_mask, batch.response_mask)
    logprobs, _ = sequence_logprobs(*args, chunk_size=5)
    logprobs.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.trainable_parameters())
    with torch.no_grad():
        naive, _ = naive_sequence_logprobs(*args)
    torch.testing.assert_close(logprobs.detach(), naive, rtol=0, atol=1e-5)


def test_logprobs_reject_a_mask_that_does_not_fit(tiny_policy) -> None:
    ids = torch.ones((2, 4), dtype=torch.long)
    with pytest.raises(ValueError, match="does not fit"):
        sequence_logprobs(tiny_policy.model, ids, torch.ones_like(ids), torch.ones((2, 4), dtype=torch.bool))
