"""Tokenize and detokenize on the worker's loaded model (``/tokenize``, ``/detokenize``).

Only the model's vocabulary is read (no context, no KV): llama.cpp's tokenizer calls are
read-only on the vocab, so they run on the reader thread while the decode thread steps. The
shapes follow llama-server: pieces are strings where a token's bytes are whole UTF-8, else the
list of byte values; detokenizing spells special tokens (``<|im_end|>``) as text and undoes
the vocab's own spacing, so tokenizing without special tokens and detokenizing round-trips.
"""

from __future__ import annotations

import ctypes
from typing import Any

from llamahomed.engine.protocol import Failed, Tokens
from llamahomed.engine.worker.inbox import tokenize

Event = dict[str, Any]
MAX_DETOKENIZE = 1_000_000


class Vocab:
    """The model's tokenizer, both ways."""

    def __init__(self, lib: Any, model: Any) -> None:
        self._lib = lib
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))

    def piece(self, token: int) -> bytes:
        """The bytes of one token, special tokens spelled out."""
        size = 64
        buffer = ctypes.create_string_buffer(size)
        n = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, True)
        if n < 0:
            size = -n
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, True)
        return buffer.raw[:max(n, 0)]

    def tokenize(self, seq_id: int, content: str, *, add_special: bool, parse_special: bool,
                 with_pieces: bool) -> Event:
        tokens = tokenize(self._lib, self._vocab, content, parse_special, add_special=add_special)
        pieces: list[str | list[int]] | None = None
        if with_pieces:
            pieces = []
            for token in tokens:
                raw = self.piece(token)
                try:
                    pieces.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    pieces.append(list(raw))
        return Tokens(seq_id, tokens, pieces).wire()

    def detokenize(self, seq_id: int, tokens: list[int]) -> Event:
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            return Failed(seq_id, "invalid_request",
                          f"token id {bad[0]} is not in this model's vocabulary "
                          f"(0 to {self.n_vocab - 1})",
                          {"errors": [{"field": "tokens", "message": "unknown token id"}],
                           "n_vocab": self.n_vocab}).wire()
        if len(tokens) > MAX_DETOKENIZE:
            return Failed(seq_id, "invalid_request",
                          f"at most {MAX_DETOKENIZE} tokens at a time").wire()
        return Tokens(seq_id, content=self.text(tokens)).wire()

    def text(self, tokens: list[int]) -> str:
        """llama.cpp's detokenizer: the vocab's own spacing rules (a SentencePiece model's
        leading space comes off again), special tokens spelled out."""
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        size = max(64, 8 * len(tokens))
        buffer = ctypes.create_string_buffer(size)
        n = self._lib.llama_detokenize(self._vocab, array, len(tokens), buffer, size, False, True)
        if n < 0:
            size = -n
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_detokenize(self._vocab, array, len(tokens), buffer, size, False,
                                           True)
        return buffer.raw[:max(n, 0)].decode("utf-8", errors="replace")
