"""Stop strings found in a response's decoded text as its tokens arrive, decoding only the newest tokens.

Decoding the whole response after every token to look for stop strings costs a growing amount of work per
token. With a byte-level BPE tokenizer (Qwen2, Llama 3, SmolLM2, GPT-2: the decoder maps tokens to bytes
and the bytes to text) the text of a token sequence is the text of any prefix that ends on a character
boundary followed by the text of the rest, so only the tokens after the last boundary need decoding: a
token may hold part of a character's UTF-8 bytes (the text then ends in U+FFFD until the character is
complete), and a stop string may span several tokens (the last `len(stop) - 1` characters before them are
kept for that). A stop string cannot sit entirely in the text before the boundary: it would have been found
when its last character arrived. Any other tokenizer's whole response is decoded each time, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import decoders
from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"  # what the decoder writes for bytes that do not (yet) form a character


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in `text`, or None."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


def decodes_bytewise(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's text of a token sequence is the concatenation of its parts' texts, split
    at character boundaries (a byte-level decoder and no clean-up of spaces)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    return isinstance(decoder, decoders.ByteLevel) and not tokenizer.clean_up_tokenization_spaces


class StopScanner:
    """Watches one response for stop strings: call `scan` after every token appended to its ids."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], *, incremental: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.incremental = incremental
        self.overlap = max(len(s) for s in self.stops) - 1
        self.settled_tokens = 0  # tokens before the last character boundary
        self.settled_tail = ""  # the last `overlap` characters of their text

    def scan(self, ids: Sequence[int]) -> tuple[str, int] | None:
        """None while no stop string appears in the text of `ids`; else that text and the index of its
        earliest stop string."""
        if not self.incremental:
            return self._whole(ids)
        recent = self._decode(ids[self.settled_tokens :])
        window = self.settled_tail + recent
        if any(s in window for s in self.stops):
            found = self._whole(ids)
            if found is None:  # the tokenizer did not decode piecewise after all: stop trusting it
                self.incremental = False
            return found
        if not recent.endswith(_INCOMPLETE):
            self.settled_tokens = len(ids)
            self.settled_tail = window[len(window) - self.overlap :] if self.overlap else ""
        return None

    def _whole(self, ids: Sequence[int]) -> tuple[str, int] | None:
        text = self._decode(ids)
        cut = first_stop(text, self.stops)
        return None if cut is None else (text, cut)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
