"""Per-sequence sampler chains on llama.cpp's sampler API (``llama_sampler_chain_*``).

Each live sequence owns one chain, so sequences decoding in the same batch never share sampler
state (penalty history, RNG). The chain is:

* ``temperature <= 0``: penalties (``repeat_penalty``, skipped at 1.0) -> greedy (argmax); the
  seed is ignored (as llama-server: penalties apply before the greedy pick).
* otherwise: penalties (``repeat_penalty`` over the last 64 tokens, skipped at 1.0) -> top_k ->
  top_p -> min_p -> temperature -> dist(seed). The penalty window is primed with the prompt's
  last 64 tokens (as llama-server does), so the penalty also covers prompt text.

``llama_sampler_sample`` applies the chain to the logits of one batch output and accepts the
chosen token into the chain itself (penalty history), so nothing else must call accept. Plain
greedy (no penalty) skips it: numpy's argmax over the logits row (first maximum, as llama.cpp's greedy sampler picks)
takes ~20 us where the C sampler spends ~1 ms building a 262k-entry candidate array for Gemma.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from llamahomed.engine.protocol import SamplingParams

PENALTY_LAST_N = 64
SEED_MASK = 0xFFFFFFFF


def resolve_seed(seed: int | None) -> int:
    """The seed a sequence samples with: its own, else a fresh random one."""
    return random.getrandbits(31) if seed is None else seed & SEED_MASK


class SamplerChain:
    """One sequence's ``llama_sampler`` chain; ``close()`` frees it (idempotent)."""

    def __init__(self, lib: Any, params: SamplingParams, n_vocab: int, seed: int,
                 prompt: Sequence[int]) -> None:
        self._lib = lib
        self._n_vocab = n_vocab
        self._ptr: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        penalised = params.repeat_penalty != 1.0
        # numpy's argmax fast path: greedy with nothing before it in the chain
        self.greedy = params.temperature <= 0 and not penalised
        if penalised:
            self._add(lib.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, float(params.repeat_penalty), 0.0, 0.0))
        if params.temperature <= 0:
            self._add(lib.llama_sampler_init_greedy())
            self._prime(prompt if penalised else ())
            return
        if params.top_k > 0:
            self._add(lib.llama_sampler_init_top_k(int(params.top_k)))
        if 0.0 < params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(float(params.top_p), 1))
        if params.min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(float(params.min_p), 1))
        self._add(lib.llama_sampler_init_temp(float(params.temperature)))
        self._add(lib.llama_sampler_init_dist(seed))
        self._prime(prompt if penalised else ())

    def _prime(self, prompt: Sequence[int]) -> None:
        """Feed the prompt's last tokens to the penalty window."""
        for token in prompt[-PENALTY_LAST_N:]:
            self._lib.llama_sampler_accept(self._ptr, token)

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._ptr, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from batch output ``index`` of the last decode."""
        if self.greedy:
            logits = self._lib.llama_get_logits_ith(ctx, index)
            if not logits:
                raise RuntimeError(f"no logits for batch output {index}")
            return int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())
        return int(self._lib.llama_sampler_sample(self._ptr, ctx, index))

    def close(self) -> None:
        if self._ptr is not None:
            self._lib.llama_sampler_free(self._ptr)
            self._ptr = None
