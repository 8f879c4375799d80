"""The policy: loading a causal language model (a named model, a local directory or a GGUF file),
optional LoRA, saving checkpoints, and memory-bounded per-token log-probabilities for the update.

Weights are always kept in float32 (the master copy the optimizer updates); `dtype="bfloat16"` only
turns on bf16 autocast for forward passes (`Policy.autocast()`), which is how the trainer runs them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from azr.config import ModelConfig
from azr.devices import resolve_device
from azr.models import CONVERSION_MARKER, EMBEDDED, MODELS, ModelLoadError, get_model, is_named_model

# Written next to a saved LoRA adapter so that `load_policy` can find the base model again.
POLICY_MANIFEST = "azr_policy.json"
LLAMA_LIKE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

ComputeDtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter hyper-parameters. The default targets are every linear layer of a llama-like block."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LLAMA_LIKE_TARGETS


@dataclass
class Policy:
    """A trainable causal LM with its tokenizer (left padding, pad token set)."""

    model: torch.nn.Module  # a transformers PreTrainedModel, or a peft PeftModel wrapping one
    tokenizer: PreTrainedTokenizerBase
    source: str  # a named model ("embedded", ...), or the absolute path the weights came from
    compute_dtype: torch.dtype
    lora: LoraSettings | None
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: bf16 autocast when the compute dtype is bfloat16, else a no-op."""
        return torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16,
            enabled=self.compute_dtype == torch.bfloat16,
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer should update (all of them, or only the LoRA adapter)."""
        return [p for p in self.model.parameters() if p.requires_grad]


def named_model_path(name: str) -> Path:
    """A plain safetensors copy of the named model `name`, converted from its GGUF file on first use.

    The copy lives in `get_model(name).converted_dir` (under `cache_dir()/models`). Conversion takes
    ~20 s for the 135M model, about a minute for 0.5B; it is written to a temporary sibling directory and
    renamed into place, so an interrupted conversion never leaves a partial cache, and two processes
    converting at once both end up with a complete copy. Raises `ModelLoadError` when `name` is unknown
    or not installed.
    """
    model = get_model(name)
    target = model.converted_dir
    if model.is_converted():
        return target
    gguf_path = model.require_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_gguf(gguf_path, staging)
        (staging / CONVERSION_MARKER).write_text(json.dumps({"source": str(gguf_path)}, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp creates it private; the cache is meant to be shared
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first (the target is non-empty) or a stale incomplete copy is in
            # the way; only a complete copy is ever renamed into place, so the stale one can be replaced.
            if not (target / CONVERSION_MARKER).is_file():
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into a float32 safetensors model directory with its tokenizer."""
    model, tokenizer = _load_gguf(gguf_path)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _load_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file as a plain float32 model: dequantized, with every trace of the quantizer removed."""
    kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    # The weights are already dequantized to float32; what remains of the quantizer would make
    # `save_pretrained` write a GGUF quantization config and later loads look for the GGUF file.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _set_special_tokens(model, tokenizer)
    return model, tokenizer


def _set_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make padding and stopping well defined: a pad token, and every end-of-text token as an EOS.

    Chat models end a turn with their EOS (SmolLM2: `<|im_end|>`), while completion-style prompts end a
    document with `<|endoftext|>`; generation should stop at either.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    eos_ids = _as_id_list(model.generation_config.eos_token_id) or _as_id_list(tokenizer.eos_token_id)
    end_of_text = tokenizer.get_vocab().get("<|endoftext|>")
    if end_of_text is not None and end_of_text not in eos_ids:
        eos_ids.append(end_of_text)
    model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def _as_id_list(token_ids: int | Sequence[int] | None) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id padding is written with: the tokenizer's pad token, else its EOS (masked out either way)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
    return tokenizer.eos_token_id


def eos_token_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a generation: the generation config's EOS ids and the tokenizer's."""
    ids = set(_as_id_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None)))
    ids.update(_as_id_list(tokenizer.eos_token_id))
    return ids


def load_policy(
    model: str | Path | None = None,
    *,
    dtype: ComputeDtype = "float32",
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    device: str | torch.device | None = None,
) -> Policy:
    """Load a policy from `model`, which may be:

    - `None` (the embedded SmolLM2-135M-Instruct) or a named model of `azr.models.MODELS`, e.g.
      `"qwen2.5-coder-0.5b"` (converted and cached on first use; it must be installed);
    - a local transformers model directory (with `config.json`), e.g. a full-weights checkpoint;
    - a LoRA checkpoint written by `save_policy_weights` (adapter + `azr_policy.json`): its base model is
      loaded and the adapter applied, kept trainable when `lora` is given, merged into the weights otherwise;
    - a local `.gguf` file, dequantized to float32.

    Weights stay float32; `dtype="bfloat16"` enables bf16 autocast via `Policy.autocast()`. With `lora`, only
    the adapter is trainable. `device` (default "auto": CUDA when available) is read by `resolve_device`.
    Raises `ModelLoadError` with an actionable message for anything that cannot be loaded.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ModelLoadError(f"Unsupported dtype {dtype!r}: use 'float32' or 'bfloat16'.")
    resolved_device = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
    source, path = _resolve_source(model)

    if path.is_dir() and (path / "adapter_config.json").is_file():
        hf_model, tokenizer, adapter = _load_lora_checkpoint(path, trainable=lora is not None)
        source = _read_manifest(path)["base_model"]
        lora = adapter if lora is not None else None
    else:
        hf_model, tokenizer = _load_plain(path)
        if lora is not None:
            hf_model = _attach_lora(hf_model, lora)

    if gradient_checkpointing:
        enable_activation_checkpointing(hf_model)
    hf_model.to(resolved_device)
    return Policy(
        model=hf_model,
        tokenizer=tokenizer,
        source=source,
        compute_dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32,
        lora=lora,
        device=resolved_device,
    )


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing (it needs no `enable_input_require_grads` hack for frozen
    embeddings), under the name the installed transformers has: `activation_checkpointing_enable` from 5.23
    on, where `gradient_checkpointing_enable` is a deprecated alias that warns (and goes in v6); before
    5.23, only `gradient_checkpointing_enable`."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def load_configured_policy(
    model: ModelConfig, device: str = "auto", checkpoint_model: Path | None = None
) -> Policy:
    """The policy a run's `model` section describes (`device` as `TrainConfig.device`), or its weights as
    saved in `checkpoint_model` by `save_policy_weights`."""
    lora = None
    if model.lora.enabled:
        targets = {"target_modules": tuple(model.lora.target_modules)} if model.lora.target_modules else {}
        lora = LoraSettings(r=model.lora.r, alpha=model.lora.alpha, dropout=model.lora.dropout, **targets)
    return load_policy(
        checkpoint_model if checkpoint_model is not None else model.path,
        dtype=model.dtype,
        lora=lora,
        gradient_checkpointing=model.gradient_checkpointing,
        device=None if device == "auto" else device,
    )


def load_frozen_reference(model: ModelConfig) -> torch.nn.Module:
    """The initial policy, frozen, for the KL term."""
    reference = load_policy(model.path, dtype=model.dtype).model
    reference.requires_grad_(False)
    return reference.eval()


def _resolve_source(model: str | Path | None) -> tuple[str, Path]:
    """Map the user's `model` argument to (source label, local path to load).

    A named model wins over a same-named file in the working directory, as `embedded` always has.
    """
    text = EMBEDDED if model is None else str(model)
    if is_named_model(text):
        return text, named_model_path(text)
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file() and path.suffix != ".gguf":
            raise ModelLoadError(
                f"{path} is a file but not a .gguf model. Pass a model directory (with config.json), "
                f"a .gguf file, or a named model ({_known_names()})."
            )
        if path.is_dir() and not (path / "config.json").is_file() and not (path / POLICY_MANIFEST).is_file():
            raise ModelLoadError(
                f"{path} is a directory without config.json, so it is not a transformers model directory. "
                "Pass the directory that holds config.json and the weights (a checkpoint directory inside "
                f"a run, not the run directory itself), a .gguf file, or a named model ({_known_names()})."
            )
        return str(path), path
    looks_like_hub_id = "/" in text and not text.startswith(("/", ".", "~")) and text.count("/") == 1
    if looks_like_hub_id:
        raise ModelLoadError(
            f"No local model at {text!r}, and it looks like a Hugging Face Hub id, but azr runs offline and "
            "never downloads weights. "
            f"Download it elsewhere (e.g. `huggingface-cli download {text} --local-dir DIR`) and pass DIR."
        )
    raise ModelLoadError(
        f"No model at {text!r}: the path does not exist and it is not a named model. "
        f"Pass a model directory, a .gguf file, or a named model ({_known_names()})."
    )


def _known_names() -> str:
    return ", ".join(MODELS)


def _load_plain(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a transformers model directory or a GGUF file (float32, tokenizer with left padding)."""
    try:
        if path.is_file():
            return _load_gguf(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"Could not load a causal language model from {path}: {error}") from error
    _set_special_tokens(model, tokenizer)
    return model, tokenizer


def _attach_lora(model: PreTrainedModel, settings: LoraSettings) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise ModelLoadError(
            f"LoRA could not be attached with target modules {list(settings.target_modules)}: {error}. "
            "Set the LoRA target modules to linear layer names that exist in this model."
        ) from error


def _read_manifest(directory: Path) -> dict:
    manifest = directory / POLICY_MANIFEST
    if not manifest.is_file():
        raise ModelLoadError(
            f"{directory} holds a LoRA adapter but no {POLICY_MANIFEST}, so its base model is unknown. "
            "Only adapters saved by azr's save_policy_weights can be loaded directly."
        )
    return json.loads(manifest.read_text())


def _load_lora_checkpoint(
    directory: Path, *, trainable: bool
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, LoraSettings]:
    """Load the base model named in the manifest, then the adapter saved in `directory`."""
    from peft import PeftModel

    base_source = _read_manifest(directory)["base_model"]
    _, base_path = _resolve_source(base_source)
    base, tokenizer = _load_plain(base_path)
    model = PeftModel.from_pretrained(base, directory, is_trainable=trainable)
    adapter = model.peft_config["default"]
    settings = LoraSettings(
        r=adapter.r,
        alpha=adapter.lora_alpha,
        dropout=adapter.lora_dropout,
        target_modules=tuple(sorted(adapter.target_modules)),
    )
    if not trainable:
        model = model.merge_and_unload()
    return model, tokenizer, settings


def save_policy_weights(
    policy: Policy, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> Path:
    """Save the policy so that `load_policy(directory)` restores it, and return the directory.

    Full fine-tuning writes a complete transformers model directory (safetensors + tokenizer). LoRA writes
    only the adapter (safetensors) and tokenizer, plus `azr_policy.json` naming the base model; loading it
    without `lora` gives the merged model, loading it with `lora` gives the trainable adapter back.
    `state_dict` replaces the model's own (a sharded model's, gathered whole: `azr.sharding`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(directory, state_dict=state_dict)
    policy.tokenizer.save_pretrained(directory)
    manifest = {"base_model": policy.source, "lora": policy.lora is not None}
    (directory / POLICY_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


@dataclass(frozen=True)
class PackedBatch:
    """Prompts and responses laid out for `sequence_logprobs`.

    Each row is `[pad ... pad, prompt, response, pad ... pad]`: prompts are left-padded to a common length
    P and responses right-padded to a common length R, so every response starts at column P and the last
    R columns hold all response tokens.
    """

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R], 1 on prompt and response tokens
    response_mask: torch.Tensor  # [B, R], True on real response tokens


def pack_sequences(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_token_id: int
) -> PackedBatch:
    """Lay out (prompt, response) token pairs as a `PackedBatch`."""
    if len(prompt_ids) != len(response_ids) or not prompt_ids:
        raise ValueError("pack_sequences needs the same, non-zero number of prompts and responses.")
    prompt_len = max(len(p) for p in prompt_ids)
    response_len = max(1, max(len(r) for r in response_ids))
    rows, masks, response_masks = [], [], []
    for prompt, response in zip(prompt_ids, response_ids, strict=True):
        left, right = prompt_len - len(prompt), response_len - len(response)
        rows.append([pad_token_id] * left + list(prompt) + list(response) + [pad_token_id] * right)
        masks.append([0] * left + [1] * (len(prompt) + len(response)) + [0] * right)
        response_masks.append([True] * len(response) + [False] * right)
    return PackedBatch(
        input_ids=torch.tensor(rows, dtype=torch.long),
        attention_mask=torch.tensor(masks, dtype=torch.long),
        response_mask=torch.tensor(response_masks, dtype=torch.bool),
    )


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a padded row sees the same positions as an unpadded one."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
    past_key_values: Cache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of the next-token distribution at every response token.

    `response_mask` is `[B, R]` and covers the last R columns of `input_ids` (see `PackedBatch`). Returns
    `(token_logprobs, token_entropy)`, both float32 `[B, R]`, zero where the mask is False. The value at
    `[b, j]` scores token `input_ids[b, T - R + j]` under `log_softmax(logits / temperature)` computed from
    the prefix before it.

    `past_key_values` holds the keys and values of columns before `input_ids` (a shared prompt prefix,
    `azr.shared_prefix`); `attention_mask` then covers those columns too, `[B, past + T]`. The forward
    appends this call's keys and values to it, so each call needs a cache of its own.

    Memory stays bounded: the decoder runs once, then the vocabulary projection and log-softmax run over
    `chunk_size` response tokens at a time (masked tokens are skipped), and each chunk is recomputed during
    backward instead of keeping its `[chunk, vocab]` activations, so no `[B, T, V]` tensor ever exists.
    Differentiable with respect to the model parameters.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive for log-probabilities.")
    batch, total_len = input_ids.shape
    response_len = response_mask.shape[1]
    if response_mask.shape[0] != batch or not 0 < response_len < total_len:
        raise ValueError(
            f"response_mask {tuple(response_mask.shape)} does not fit input_ids {(batch, total_len)}."
        )
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    if past and model.training and activation_checkpointed(model):
        raise ValueError(
            "checkpointed decoder layers drop past_key_values in training: forward whole sequences"
        )
    if tuple(attention_mask.shape) != (batch, past + total_len):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} does not cover {past} cached and {total_len} new "
            "columns."
        )

    hidden = decoder_states(
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask)[:, past:],
        past_key_values=past_key_values,
        use_cache=False,
    )
    # The hidden state at column t predicts the token at column t + 1.
    predicting = hidden[:, total_len - response_len - 1 : total_len - 1]
    targets = input_ids[:, total_len - response_len :]
    selected = response_mask.bool()
    flat_hidden, flat_targets = predicting[selected], targets[selected]

    head = model.get_output_embeddings()
    weight, bias = head.weight, head.bias
    device_type = flat_hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # Autocast casts a weight again at every call unless it is trained (a frozen head under LoRA, a
        # 152k x 896 copy per chunk); cast once for all chunks, to the same values.
        dtype = torch.get_autocast_dtype(device_type)
        weight = weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    softcap = getattr(model.config, "final_logit_softcapping", None)
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, flat_targets.shape[0], chunk_size):
        args = (flat_hidden[start : start + chunk_size], flat_targets[start : start + chunk_size])
        if torch.is_grad_enabled():
            logprob, entropy = checkpoint(
                _chunk_logprobs, weight, bias, *args, temperature, softcap, use_reentrant=False
            )
        else:
            logprob, entropy = _chunk_logprobs(weight, bias, *args, temperature, softcap)
        logprob_chunks.append(logprob)
        entropy_chunks.append(entropy)

    token_logprobs = hidden.new_zeros((batch, response_len), dtype=torch.float32)
    token_entropy = hidden.new_zeros((batch, response_len), dtype=torch.float32)
    if logprob_chunks:
        token_logprobs = token_logprobs.masked_scatter(selected, torch.cat(logprob_chunks))
        token_entropy = token_entropy.masked_scatter(selected, torch.cat(entropy_chunks))
    return token_logprobs, token_entropy


def activation_checkpointed(model: torch.nn.Module) -> bool:
    """Whether any layer of `model` recomputes its activations in backward: its `gradient_checkpointing`
    flag in transformers 5.19, or `activation_checkpointing` in case the flag followed the method's
    rename (`activation_checkpointing_enable`, 5.23; not checked there)."""
    names = ("gradient_checkpointing", "activation_checkpointing")
    return any(getattr(module, name, False) is True for module in model.modules() for name in names)


def decoder_states(model: torch.nn.Module, **inputs: Any) -> torch.Tensor:
    """The decoder's last hidden states for `inputs` (the model's forward arguments), `[B, T, hidden]`.

    An FSDP2-sharded model runs whole, so that its root's all-gathers and reduce-scatters, which wrap the
    model's own forward, take part: a hook keeps the decoder's output, and the model projects only the
    last position onto the vocabulary. Any other model runs its decoder alone, since that projection is
    wasted, and under bf16 autocast costly: the frozen head weight is cast again, and a one-row batch's
    last position goes through a slow batched-matmul path (5 s for one token of Qwen2.5-0.5B's 152k
    vocabulary on a 2-core CPU, measured).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    if not isinstance(model, FSDPModule):
        return decoder(**inputs).last_hidden_state
    output = []
    hook = decoder.register_forward_hook(lambda module, args, result: output.append(result.last_hidden_state))
    try:
        model(**inputs, logits_to_keep=1)
    finally:
        hook.remove()
    return output[0]


def _chunk_logprobs(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    log_probs = F.log_softmax(logits / temperature, dim=-1)
    token_logprob = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return token_logprob, entropy


def naive_sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `sequence_logprobs` through the model's full logits; `[B, T, V]` memory, for tests
    and benchmarks only."""
    response_len = response_mask.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits
    log_probs = F.log_softmax(logits[:, -response_len - 1 : -1].float() / temperature, dim=-1)
    token_logprobs = log_probs.gather(-1, input_ids[:, -response_len:].unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    mask = response_mask.float()
    return token_logprobs * mask, entropy * mask
