"""Embeddings on the worker's model, for every model (as llama-server and Ollama serve them).

A second llama context on the worker's already-loaded model, created on first use with
``embeddings=True``: the weights are shared, only this context's KV and compute buffers are
new. It never touches the decode thread's context; calls are serialised by a lock and run on
their own thread (see ``serve.py``), so generation keeps stepping while a batch is embedded.

Pooling: the GGUF's own (``{arch}.pooling_type``: an embedding model's mean, CLS or last
token) where it declares one, llama.cpp pooling the whole input in one ubatch; otherwise (a
text-generation model) the mean of the last hidden layer over the input's tokens, which this
module sums chunk by chunk: llama.cpp computes a generative model's output head for every token
of an embedding batch (n_ubatch x n_vocab floats: 1 GiB per 1024 tokens for Gemma's 262k
vocabulary), so a causal model is decoded in ``CHUNK``-token ubatches, its KV cache carrying the
input's start. Every vector is L2-normalised, as OpenAI, llama-server and Ollama return them, so
a dot product is the cosine similarity.

Inputs are texts (tokenized here, BOS added as the vocab wants, special tokens read as text)
or token-id lists (checked against the vocabulary, used as given).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from llamahomed.engine.protocol import Done, Failed, empty_usage
from llamahomed.engine.worker.inbox import tokenize

Event = dict[str, Any]
Input = str | list[int]
MAX_INPUTS = 256
CHUNK = 256  # tokens per ubatch where this module mean-pools a causal model itself
POOLING_NONE, POOLING_MEAN, POOLING_RANK = 0, 1, 4
POOLING_NAMES = {1: "mean", 2: "cls", 3: "last", 4: "rank"}


class InputError(ValueError):
    """An input the model cannot embed: refused with ``code`` and ``details``."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code, self.details = code, details


class Embedder:
    """Turns texts (or token lists) into L2-normalised vectors with the model's own pooling,
    or mean pooling where the model declares none."""

    def __init__(self, lib: Any, model: Any, n_ctx: int, n_threads: int) -> None:
        self._lib, self._model = lib, model
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.n_ctx, self._n_threads = n_ctx, n_threads
        self.n_embd = int(lib.llama_model_n_embd(model))
        self.pooling = ""  # the pooling in use ("mean", "cls", "last"), once the context exists
        self._chunked = False
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

    def _declared_pooling(self) -> int:
        """The GGUF's ``{arch}.pooling_type``; 0 (none) where it declares none."""
        def meta(key: str) -> str:
            buffer = ctypes.create_string_buffer(64)
            n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, 64)
            return buffer.value.decode("utf-8", "replace") if n >= 0 else ""

        value = meta(f"{meta('general.architecture')}.pooling_type")
        return int(value) if value.isdigit() else POOLING_NONE

    def _new_context(self, pooling: int, n_ubatch: int) -> Any:
        params = self._lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = n_ubatch
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self._n_threads
        params.embeddings = True
        params.pooling_type = pooling
        # CPU flash attention accumulates in f16: ~1e-2 off per element of a unit vector on
        # SmolLM2 Q4_1. An embedding is one prefill, so the exact f32 path costs little.
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = self._lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create an embedding context")
        return ctx

    def _context(self) -> Any:
        if self._ctx is None:
            declared = self._declared_pooling()
            causal = bool(self._lib.llama_model_has_decoder(self._model))
            if declared not in (POOLING_NONE, POOLING_RANK):
                self._ctx = self._new_context(declared, self.n_ctx)  # one input, one ubatch
                self.pooling, self._chunked = POOLING_NAMES.get(declared, "mean"), False
            elif causal:  # a generative model: mean of the token states, summed per chunk
                self._ctx = self._new_context(POOLING_NONE, min(CHUNK, self.n_ctx))
                self.pooling, self._chunked = "mean", True
            else:  # an encoder without a pooling type: llama.cpp's mean over one ubatch
                self._ctx = self._new_context(POOLING_MEAN, self.n_ctx)
                self.pooling, self._chunked = "mean", False
        return self._ctx

    def tokens(self, index: int, given: Input) -> list[int]:
        """The tokens of one input; raises ``InputError`` for one that cannot be embedded."""
        if isinstance(given, str):
            tokens = tokenize(self._lib, self._vocab, given)
        else:
            tokens = [int(t) for t in given]
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            if bad:
                raise InputError("invalid_request",
                                 f"input[{index}]: token id {bad[0]} is not in this model's "
                                 f"vocabulary (0 to {self.n_vocab - 1})",
                                 {"errors": [{"field": "input", "message": "unknown token id"}],
                                  "n_vocab": self.n_vocab, "index": index})
        if not tokens:
            raise InputError("invalid_request", f"input[{index}] has no tokens",
                             {"errors": [{"field": "input", "message": "empty input"}],
                              "index": index})
        if len(tokens) > self.n_ctx:
            raise InputError("context_length_exceeded",
                             f"input[{index}] has {len(tokens)} tokens; this model embeds at most "
                             f"{self.n_ctx} tokens per input (its loaded context)",
                             {"errors": [{"field": "input", "message": "too many tokens"}],
                              "prompt_tokens": len(tokens), "context_length": self.n_ctx,
                              "index": index})
        return tokens

    def _run(self, ctx: Any, tokens: list[int]) -> None:
        lib = self._lib
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        batch = lib.llama_batch_get_one(array, len(tokens))  # every token an output
        encoder_only = lib.llama_model_has_encoder(self._model) and not lib.llama_model_has_decoder(self._model)
        status = lib.llama_encode(ctx, batch) if encoder_only else lib.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp failed to embed (status {status})")

    def _one(self, ctx: Any, tokens: list[int]) -> list[float]:
        lib = self._lib
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        if self._chunked:
            total = np.zeros(self.n_embd, dtype=np.float64)
            for start in range(0, len(tokens), CHUNK):
                chunk = tokens[start:start + CHUNK]
                self._run(ctx, chunk)
                pointer = lib.llama_get_embeddings(ctx)
                if not pointer:
                    raise RuntimeError("llama.cpp returned no token embeddings")
                states = np.ctypeslib.as_array(pointer, shape=(len(chunk), self.n_embd))
                total += states.sum(axis=0, dtype=np.float64)
            vector = total / len(tokens)
        else:
            self._run(ctx, tokens)
            pointer = lib.llama_get_embeddings_seq(ctx, 0)
            if not pointer:
                raise RuntimeError("llama.cpp returned no pooled embedding")
            vector = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).astype(np.float64)
        norm = float(np.linalg.norm(vector))
        return [float(x) for x in (vector / norm if norm > 0 else vector)]

    def embed(self, seq_id: int, inputs: list[Input]) -> Event:
        """One ``done`` event carrying ``embeddings`` in input order (or an ``error`` event)."""
        if not 1 <= len(inputs) <= MAX_INPUTS:
            return Failed(seq_id, "invalid_request", f"embed 1 to {MAX_INPUTS} inputs at a time",
                          {"errors": [{"field": "input", "message": "empty or too many"}]}).wire()
        try:
            token_lists = [self.tokens(i, given) for i, given in enumerate(inputs)]
        except InputError as exc:
            return Failed(seq_id, exc.code, str(exc), exc.details).wire()
        try:
            with self._lock:
                ctx = self._context()
                vectors = [self._one(ctx, tokens) for tokens in token_lists]
        except RuntimeError as exc:
            return Failed(seq_id, "internal_error", str(exc)).wire()
        n_tokens = sum(len(t) for t in token_lists)
        return Done(seq_id, "stop", empty_usage(n_tokens), embeddings=vectors).wire()

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.llama_free(self._ctx)
                self._ctx = None
