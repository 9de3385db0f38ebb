"""Per-sequence sampler chains on llama.cpp's sampler API (``llama_sampler_chain_*``).

Each live sequence owns one chain, so sequences decoding in the same batch never share sampler
state (penalty history, RNG). The chain is:

* ``temperature <= 0``: greedy (argmax), nothing else; repeat penalty and seed are ignored.
* otherwise: penalties (``repeat_penalty`` over the last 64 tokens, skipped at 1.0) -> top_k ->
  top_p -> min_p -> temperature -> dist(seed). The penalty window is primed with the prompt's
  last 64 tokens (as llama-server does), so the penalty also covers prompt text.

``llama_sampler_sample`` applies the chain to the logits of one batch output and accepts the
chosen token into the chain itself (penalty history), so nothing else must call accept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

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
        self._ptr: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self.greedy = params.temperature <= 0
        if self.greedy:
            self._add(lib.llama_sampler_init_greedy())
            return
        if params.repeat_penalty != 1.0:
            self._add(lib.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, float(params.repeat_penalty), 0.0, 0.0))
        if params.top_k > 0:
            self._add(lib.llama_sampler_init_top_k(int(params.top_k)))
        if 0.0 < params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(float(params.top_p), 1))
        if params.min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(float(params.min_p), 1))
        self._add(lib.llama_sampler_init_temp(float(params.temperature)))
        self._add(lib.llama_sampler_init_dist(seed))
        if params.repeat_penalty != 1.0:
            for token in prompt[-PENALTY_LAST_N:]:
                lib.llama_sampler_accept(self._ptr, token)

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._ptr, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from batch output ``index`` of the last decode."""
        return int(self._lib.llama_sampler_sample(self._ptr, ctx, index))

    def close(self) -> None:
        if self._ptr is not None:
            self._lib.llama_sampler_free(self._ptr)
            self._ptr = None
