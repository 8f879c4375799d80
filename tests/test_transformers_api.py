"""transformers APIs that changed name between the versions azr meets: the pinned 5.19, 5.17 (on the lent GPU
machines) and 5.23. Activation checkpointing is `gradient_checkpointing_enable` up to 5.22 and
`activation_checkpointing_enable` from 5.23, where the old name is a deprecated alias (gone in v6);
`azr.policy.enable_activation_checkpointing` calls whichever the installed version has."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM
from transformers.modeling_layers import GradientCheckpointingLayer

from azr.policy import enable_activation_checkpointing, load_policy


def test_checkpointing_is_on_non_reentrant_and_without_deprecation_warnings(tiny_model_dir: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = load_policy(tiny_model_dir, gradient_checkpointing=True, device="cpu")
    assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]
    layers = [m for m in policy.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(layer.gradient_checkpointing for layer in layers)
    assert layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": False}


def test_the_newer_name_is_called_where_transformers_has_it(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    calls = []
    model.activation_checkpointing_enable = lambda **options: calls.append(options)  # as on 5.23
    model.gradient_checkpointing_enable = lambda **options: pytest.fail("called the deprecated name")
    enable_activation_checkpointing(model)
    assert calls == [{"activation_checkpointing_kwargs": {"use_reentrant": False}}]
