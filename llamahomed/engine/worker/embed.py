"""Embeddings for models whose GGUF declares a pooling type (embedding models).

A second llama context on the worker's already-loaded model, created on first use with
``embeddings=True``: the weights are shared, only this context's KV and compute buffers are
new. It never touches the decode thread's context; calls are serialised by a lock and run on
their own thread (see ``worker.py``), so generation keeps stepping while a batch is embedded.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from llamahomed.engine.protocol import Done, Failed, empty_usage
from llamahomed.engine.worker.inbox import tokenize

Event = dict[str, Any]
MAX_INPUTS = 256


class Embedder:
    """Turns texts into L2-normalised vectors with the model's own pooling."""

    def __init__(self, lib: Any, model: Any, n_ctx: int, n_threads: int) -> None:
        self._lib, self._model = lib, model
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_ctx, self._n_threads = n_ctx, n_threads
        self.n_embd = int(lib.llama_model_n_embd(model))
        self._ctx: Any = None
        self._lock = threading.Lock()

    @property
    def lib(self) -> Any:
        """llama.cpp's bindings (the model's other users, e.g. the tokenizer, share them)."""
        return self._lib

    @property
    def model(self) -> Any:
        """The worker's loaded model (shared, not owned: the engine frees it)."""
        return self._model

    def _context(self) -> Any:
        if self._ctx is None:
            params = self._lib.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = self.n_ctx
            params.n_seq_max = 1
            params.n_threads = params.n_threads_batch = self._n_threads
            params.embeddings = True
            ctx = self._lib.llama_init_from_model(self._model, params)
            if not ctx:
                raise RuntimeError("llama.cpp could not create an embedding context")
            if self._lib.llama_pooling_type(ctx) <= 0:  # NONE or UNSPECIFIED: per-token only
                self._lib.llama_free(ctx)
                raise RuntimeError("this model has no pooling type; it cannot embed")
            self._ctx = ctx
        return self._ctx

    def _tokens(self, text: str) -> list[int]:
        return tokenize(self._lib, self._vocab, text)

    def _one(self, ctx: Any, tokens: list[int]) -> list[float]:
        lib = self._lib
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        batch = lib.llama_batch_get_one(array, len(tokens))
        encoder_only = lib.llama_model_has_encoder(self._model) and not lib.llama_model_has_decoder(self._model)
        status = lib.llama_encode(ctx, batch) if encoder_only else lib.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp failed to embed (status {status})")
        pointer = lib.llama_get_embeddings_seq(ctx, 0)
        if not pointer:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        vector = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).astype(np.float64)
        norm = float(np.linalg.norm(vector))
        return [float(x) for x in (vector / norm if norm > 0 else vector)]

    def embed(self, seq_id: int, texts: list[str]) -> Event:
        """One ``done`` event carrying ``embeddings`` (or an ``error`` event)."""
        if not 1 <= len(texts) <= MAX_INPUTS:
            return Failed(seq_id, "invalid_request", f"embed 1 to {MAX_INPUTS} inputs at a time").wire()
        token_lists = [self._tokens(text) for text in texts]
        for tokens in token_lists:
            if len(tokens) > self.n_ctx:
                return Failed(seq_id, "context_length_exceeded",
                              f"an input has {len(tokens)} tokens; this model embeds at most "
                              f"{self.n_ctx}",
                              {"prompt_tokens": len(tokens), "context_length": self.n_ctx}).wire()
        try:
            with self._lock:
                ctx = self._context()
                vectors = [self._one(ctx, tokens) for tokens in token_lists]
        except RuntimeError as exc:
            return Failed(seq_id, "invalid_request", str(exc)).wire()
        n_tokens = sum(len(t) for t in token_lists)
        return Done(seq_id, "stop", empty_usage(n_tokens), embeddings=vectors).wire()

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.llama_free(self._ctx)
                self._ctx = None
