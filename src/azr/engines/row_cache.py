"""The key/value cache of a batch of independent rows, which can be regrouped between forward passes.

The transformers backend keeps one batch decoding while rows come and go: rows that finish are dropped and
waiting prompts are admitted into their places (`RowCache.gather`), and a prompt or prompt prefix shared by
several rows is prefilled once, its keys and values gathered into every row that shares it (with masked
padding between a shared prefix and a shorter row's own suffix). Rows are right-aligned:
every row's latest token sits in the last column, and a row shorter than the batch has masked padding
columns on its left, so that one decode step appends one column for all rows. Gathering keeps only the
columns the widest gathered row needs, so padding left behind by rows that finished is dropped.

A `RowCache` is a transformers `Cache` (the model's attention layers call its `update`), stores keys and
values in one dtype (the compute dtype: under bf16 autocast the keys would otherwise be float32, and be cast
again by every decode step's attention), and keeps spare columns so that a decode step writes its column
in place instead of copying the whole cache, as `DynamicCache`'s concatenation does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer

# Columns allocated beyond the current length: one copy of the cache every this many decode steps.
SPARE_COLUMNS = 64


class _RowLayer(DynamicLayer):
    """One attention layer's keys and values, `[rows, kv heads, columns, head dim]`, in `storage_dtype`,
    with spare columns after the used ones."""

    def __init__(self, storage_dtype: torch.dtype) -> None:
        super().__init__()
        self.storage_dtype = storage_dtype
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._adopt(
            key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3])),
            value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[3])),
            0,
        )

    def _adopt(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> None:
        self.dtype, self.device = key_buffer.dtype, key_buffer.device
        self.key_buffer, self.value_buffer, self.length = key_buffer, value_buffer, length
        self.keys, self.values = key_buffer[:, :, :length], value_buffer[:, :, :length]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key_states, value_states = key_states.to(self.storage_dtype), value_states.to(self.storage_dtype)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new_length = self.length + key_states.shape[2]
        if new_length > self.key_buffer.shape[2]:
            spare = SPARE_COLUMNS if self.length else 0  # a prefill is gathered elsewhere before decoding
            self._adopt(
                _with_columns(self.keys, new_length + spare),
                _with_columns(self.values, new_length + spare),
                self.length,
            )
        self.key_buffer[:, :, self.length : new_length] = key_states
        self.value_buffer[:, :, self.length : new_length] = value_states
        self._adopt(self.key_buffer, self.value_buffer, new_length)
        return self.keys, self.values


def _with_columns(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """`tensor` `[rows, heads, length, dim]` copied into a zeroed buffer of `columns` columns."""
    buffer = tensor.new_zeros((*tensor.shape[:2], columns, tensor.shape[3]))
    buffer[:, :, : tensor.shape[2]] = tensor
    return buffer


class RowCache(Cache):
    """Keys and values of `len(lengths)` right-aligned rows, with which columns hold real tokens (`valid`,
    `[rows, columns]`), each row's count of real tokens (`lengths`, host-side), how many columns it spans
    from its first real one (`spans`: its length, or more when a prompt's suffix was prefilled after a
    shared prefix, with padding between them) and the position its next token takes (`positions`,
    `[rows]`, equal to its length)."""

    def __init__(self, num_layers: int, storage_dtype: torch.dtype) -> None:
        super().__init__(layers=[_RowLayer(storage_dtype) for _ in range(num_layers)])
        self.storage_dtype = storage_dtype
        self.valid: torch.Tensor | None = None
        self.lengths: list[int] = []
        self.spans: list[int] = []
        self.positions: torch.Tensor | None = None

    @property
    def columns(self) -> int:
        return self.layers[0].length

    @property
    def padded(self) -> bool:
        """Whether some row has padding columns, so attention needs a mask."""
        return min(self.lengths) < self.columns

    def record_prompts(self, valid: list[list[int]], device: torch.device) -> None:
        """After the prefill forward pass of the prompts: which of its columns hold real tokens, per row."""
        self.valid = torch.tensor(valid, dtype=torch.bool, device=device)
        self.lengths = [sum(row) for row in valid]
        self.spans = [len(row) - row.index(1) for row in valid]
        self.positions = torch.tensor(self.lengths, device=device)

    def decode_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The 4D attention mask (None without padding) and position ids of a one-token decode step, which
        will append one column. Call `advance` after the forward pass."""
        columns = self.columns
        if self.valid.shape[1] <= columns:
            self.valid = F.pad(self.valid, (0, columns + 1 + SPARE_COLUMNS - self.valid.shape[1]))
        self.valid[:, columns] = True
        mask = self.valid[:, None, None, : columns + 1] if self.padded else None
        return mask, self.positions[:, None]

    def advance(self) -> None:
        """After a decode step: every row holds one more real token."""
        self.lengths = [length + 1 for length in self.lengths]
        self.spans = [span + 1 for span in self.spans]
        self.positions += 1

    @classmethod
    def gather(
        cls, parts: Sequence[tuple[RowCache, Sequence[int]]], *, consume: RowCache | None = None
    ) -> RowCache:
        """A new cache holding the given rows of each part, in order, right-aligned to the widest span of
        them, with spare columns for decoding. The parts are left as they were, except `consume` (the
        batch this one replaces), whose layers are freed one by one once copied, so that gathering never
        holds two whole caches."""
        picked = [(part, torch.tensor(rows, device=part.positions.device)) for part, rows in parts if rows]
        columns = max(part.spans[row] for part, rows in parts for row in rows)
        gathered = cls(len(picked[0][0].layers), picked[0][0].storage_dtype)
        masks = [part.valid[index, : part.columns][:, None, :, None] for part, index in picked]
        gathered.valid = _stacked(masks, columns, spare=0)[:, 0, :, 0]
        gathered.lengths = [part.lengths[row] for part, rows in parts for row in rows]
        gathered.spans = [part.spans[row] for part, rows in parts for row in rows]
        gathered.positions = torch.cat([part.positions[index] for part, index in picked])
        for number, layer in enumerate(gathered.layers):
            key_buffer, value_buffer = (
                _stacked(
                    [getattr(part.layers[number], name)[index] for part, index in picked],
                    columns,
                    spare=SPARE_COLUMNS,
                )
                for name in ("keys", "values")
            )
            layer._adopt(key_buffer, value_buffer, columns)
            if consume is not None:
                consume.layers[number] = _RowLayer(consume.storage_dtype)
        return gathered


def _stacked(pieces: Sequence[torch.Tensor], columns: int, spare: int) -> torch.Tensor:
    """Pieces `[rows, heads, length, dim]` stacked on rows into a zeroed buffer of `columns + spare`
    columns, each right-aligned to column `columns`: leading columns cut, or zero columns on the left."""
    first = pieces[0]
    rows = sum(piece.shape[0] for piece in pieces)
    buffer = first.new_zeros((rows, first.shape[1], columns + spare, first.shape[3]))
    start = 0
    for piece in pieces:
        kept = min(piece.shape[2], columns)
        buffer[start : start + piece.shape[0], :, columns - kept : columns] = piece[
            :, :, piece.shape[2] - kept :
        ]
        start += piece.shape[0]
    return buffer
