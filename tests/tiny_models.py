"""Random-weight models for tests: the SmolLM2 tokenizer with a small decoder of a given architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_random_model(
    directory: Path, tokenizer_dir: Path, config_class: type, model_class: type, **shape: Any
) -> Path:
    """Build `model_class(config_class(**shape))` with seed-0 random weights, tied embeddings and the
    tokenizer's special tokens, and save it with its tokenizer into `directory`."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = config_class(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
