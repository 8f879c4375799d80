"""Shared fixtures: a tiny randomly initialised llama-style model with the real SmolLM2 tokenizer.

The tokenizer comes from the embedded model's cached conversion (`azr.policy.embedded_model_path`); the
first test session on a machine pays the one-off ~20 s conversion, every later one loads it in ~0.2 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from azr.generation import TransformersBackend
from azr.policy import Policy, embedded_model_path, load_policy


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 llama model (random weights, seed 0) saved with `save_pretrained`."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path(), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir: Path) -> Policy:
    """The tiny model loaded on CPU for full fine-tuning. Session-scoped: do not update its weights."""
    return load_policy(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_backend(tiny_policy: Policy) -> TransformersBackend:
    """A transformers generation backend on `tiny_policy`."""
    return TransformersBackend.from_policy(tiny_policy, max_batch_size=4)
