"""Per-sequence samplers: logit adjustments in numpy, the choice on llama.cpp's sampler API.

Each live sequence owns one :class:`SamplerChain`, so sequences decoding in the same batch never
share sampler state (grammar state, penalty history, RNG). A step, each stage only where asked:

* logit bias (``params.logit_bias``: token id -> added to its logit; -100 bans, +100 forces) and
  the penalties ``repeat_penalty`` (skipped at 1.0), ``frequency_penalty`` and
  ``presence_penalty`` (skipped at 0), over the last 64 tokens, the window primed with the
  prompt's last 64 tokens (as llama-server does). :class:`~.logit_adjust.LogitAdjust` changes
  only the logits they touch, in the row, and restores them after the pick.
* ``temperature <= 0``: greedy, numpy's argmax over the (adjusted) row, the first maximum as
  llama.cpp's greedy sampler picks (~20 us where the C sampler spends ~1 ms building a 262k-entry
  candidate array for Gemma); the seed is ignored.
* otherwise llama.cpp's chain top_k -> top_p -> min_p -> temperature -> dist(seed). With a top_k
  the chain runs on the ``top_k`` largest logits only (:func:`~.logit_adjust.top_candidates`):
  top_k would keep exactly those, so the candidates the rest of the chain sees, and the token
  it draws with the same seed, are the ones the whole vocabulary gives. top_k 0 runs the chain on
  the whole vocabulary.

A grammar (``params.grammar``, GBNF) stands in front of the chain, as in llama-server's
``common_sampler_sample``: applied to the whole vocabulary it costs ~65 ms a step on Gemma's
262k entries (every piece checked against the grammar), so the chain first picks a token
without it, the grammar checks that one token, and only when it refuses are the logits sampled
again with the grammar applied first (grammar, then the chain) over the whole vocabulary.
Either way the token is one the grammar takes, and the grammar and the window accept it.
"""

from __future__ import annotations

import ctypes
import math
import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from llamahomed.engine.grammar import GRAMMAR_ROOT, GrammarError, grammar_problem
from llamahomed.engine.protocol import Failed, Prompt, SamplingParams
from llamahomed.engine.worker.logit_adjust import LogitAdjust, top_candidates
from llamahomed.engine.worker.logprobs import row_logprobs

SEED_MASK = 0xFFFFFFFF
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
TOKEN_REF = re.compile(r"<\[\s*(\d+)\s*\]>")


def resolve_seed(seed: int | None) -> int:
    """The seed a sequence samples with: its own, else a fresh random one."""
    return random.getrandbits(31) if seed is None else seed & SEED_MASK


class _Candidates:
    """A reusable ``llama_token_data_array`` over numpy storage of ``capacity`` entries."""

    def __init__(self, lib: Any, capacity: int) -> None:
        self.data = np.zeros(capacity, dtype=TOKEN_DATA)
        self.array = lib.llama_token_data_array(
            self.data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), capacity, -1, False)

    def fill(self, ids: Any, logits: Any) -> Any:
        """Load ``ids`` with their ``logits``; the array, unsorted, nothing selected."""
        n = len(ids)
        self.data["id"][:n] = ids
        self.data["logit"][:n] = logits
        self.data["p"][:n] = 0.0
        array = self.array
        array.size, array.selected, array.sorted = n, -1, False
        return array


class SamplerChain:
    """One sequence's sampler; ``close()`` frees its llama.cpp objects (idempotent).

    ``vocab`` is the model's (needed for a grammar); a grammar llama.cpp refuses raises
    :class:`GrammarError`.
    """

    def __init__(self, lib: Any, params: SamplingParams, n_vocab: int, seed: int,
                 prompt: Sequence[int], vocab: Any = None) -> None:
        self._lib = lib
        self._n_vocab = n_vocab
        self._grammar: Any = None
        self._adjust = LogitAdjust(params, prompt)
        self.wants_logprobs = params.logprobs
        self._top_logprobs = params.top_logprobs
        self.logprob: tuple[float, list[tuple[int, float]]] = (0.0, [])
        self._greedy = params.temperature <= 0
        self._top_k = int(params.top_k) if 0 < params.top_k < n_vocab else 0
        self._ptr: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._all: _Candidates | None = None  # the whole vocabulary, made when first needed
        self._few = _Candidates(lib, max(self._top_k, 1))
        if params.grammar:
            self._grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode("utf-8"),
                                                           GRAMMAR_ROOT)
            if not self._grammar:
                self.close()
                raise GrammarError("llama.cpp refused the grammar (failed to parse)")
        self.greedy = self._greedy and not self._adjust.active and self._grammar is None
        if self._greedy:
            return
        if self._top_k:
            self._add(lib.llama_sampler_init_top_k(self._top_k))
        if 0.0 < params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(float(params.top_p), 1))
        if params.min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(float(params.min_p), 1))
        self._add(lib.llama_sampler_init_temp(float(params.temperature)))
        self._add(lib.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._ptr, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from batch output ``index`` of the last decode; with
        ``params.logprobs`` its log probability and the top ones are left in ``logprob``."""
        row = self._logits(ctx, index)
        token = self._choose(row)
        if self.wants_logprobs:
            self.logprob = row_logprobs(row, token, self._top_logprobs)
        return token

    def _choose(self, row: Any) -> int:
        if self.greedy:
            return int(row.argmax())
        self._adjust.apply(row)
        try:
            token = self._pick(row)
            if self._grammar is not None and not self._grammar_takes(token):
                token = self._apply(self._whole(row), grammar=True)
        finally:
            self._adjust.restore(row)
        if self._grammar is not None:
            self._lib.llama_sampler_accept(self._grammar, token)
        self._adjust.accept(token)
        return token

    def _logits(self, ctx: Any, index: int) -> Any:
        logits = self._lib.llama_get_logits_ith(ctx, index)
        if not logits:
            raise RuntimeError(f"no logits for batch output {index}")
        return np.ctypeslib.as_array(logits, shape=(self._n_vocab,))

    def _pick(self, row: Any) -> int:
        """The chain's token from the adjusted ``row``, without the grammar."""
        if self._greedy:
            return int(row.argmax())
        if self._top_k:
            ids = top_candidates(row, self._top_k)
            return self._apply(self._few.fill(ids, row[ids]), grammar=False)
        return self._apply(self._whole(row), grammar=False)

    def _whole(self, row: Any) -> Any:
        if self._all is None:
            self._all = _Candidates(self._lib, self._n_vocab)
        return self._all.fill(self._ids, row)

    def _grammar_takes(self, token: int) -> bool:
        one = self._few
        array = one.fill((token,), (1.0,))
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return bool(one.data["logit"][0] != -math.inf)

    def _apply(self, array: Any, grammar: bool) -> int:
        """Run the chain (after the grammar, if asked) over ``array``; the selected id."""
        lib = self._lib
        if grammar:
            lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        if self._greedy:  # no chain: the largest logit left (the grammar sets refused to -inf)
            selected = self._argmax(array)
        else:
            lib.llama_sampler_apply(self._ptr, ctypes.byref(array))
            selected = int(array.selected)
        if not 0 <= selected < array.size:
            raise RuntimeError("the sampler chain selected no token")
        chosen = self._entry(array, selected)
        if grammar and chosen["logit"] == -math.inf:  # accepting it would abort llama.cpp
            raise GrammarError("the grammar allows no token of this model's vocabulary here")
        return int(chosen["id"])

    def _storage(self, array: Any) -> Any:
        return self._few.data if array is self._few.array else self._all.data  # type: ignore[union-attr]

    def _argmax(self, array: Any) -> int:
        return int(self._storage(array)["logit"][:array.size].argmax())

    def _entry(self, array: Any, selected: int) -> Any:
        return self._storage(array)[selected]

    def close(self) -> None:
        if self._grammar is not None:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None
        if self._ptr is not None:
            self._lib.llama_sampler_free(self._ptr)
            self._ptr = None


def params_problem(lib: Any, vocab: Any, n_vocab: int, params: SamplingParams) -> dict[str, str] | None:
    """What makes ``params`` unusable with this model (``{"field", "message"}``), else None.

    Run when a sequence is submitted, so the answer is an ``invalid_request`` error event
    before ``accepted``.
    """
    bad = [token for token, _ in params.logit_bias if not 0 <= token < n_vocab]
    if bad:
        return {"field": "logit_bias",
                "message": f"token id {bad[0]} is not in this model's vocabulary (0..{n_vocab - 1})"}
    if params.grammar:
        # llama.cpp takes any <[id]> when it parses, then aborts the process sampling it
        ids = [int(n) for n in TOKEN_REF.findall(params.grammar) if int(n) >= n_vocab]
        if ids:
            return {"field": "grammar", "message": f"token <[{ids[0]}]> is not in this model's "
                                                   f"vocabulary (0..{n_vocab - 1})"}
        problem = grammar_problem(params.grammar, vocab, lib)
        if problem:
            return {"field": "grammar", "message": problem}
    return None


def prompt_problem(prompt: Prompt, n_vocab: int) -> dict[str, str] | None:
    """What makes a token-id prompt unusable with this model, else None (text always goes)."""
    if isinstance(prompt, str):
        return None
    if not prompt:
        return {"field": "prompt", "message": "a token prompt needs at least one token"}
    bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
    if bad is not None:
        return {"field": "prompt",
                "message": f"token id {bad} is not in this model's vocabulary (0..{n_vocab - 1})"}
    return None


def invalid_params(seq_id: int, problem: dict[str, str]) -> dict[str, Any]:
    """The ``invalid_request`` error event for a sequence whose sampling params cannot run."""
    return Failed(seq_id, "invalid_request", f"{problem['field']}: {problem['message']}",
                  {"errors": [problem]}).wire()
