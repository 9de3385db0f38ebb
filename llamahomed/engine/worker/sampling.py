"""Per-sequence sampler chains on llama.cpp's sampler API (``llama_sampler_chain_*``).

Each live sequence owns one chain, so sequences decoding in the same batch never share sampler
state (grammar state, penalty history, RNG). The chain, each stage only where asked for:

* logit bias (``params.logit_bias``: token id -> added to its logit; -100 bans, +100 forces).
* penalties: ``repeat_penalty`` (skipped at 1.0), ``frequency_penalty`` and
  ``presence_penalty`` (skipped at 0), over the last 64 tokens. The window is primed with the
  prompt's last 64 tokens (as llama-server does), so a penalty also covers prompt text.
* ``temperature <= 0``: greedy (argmax); the seed is ignored (as llama-server: penalties apply
  before the greedy pick). Otherwise top_k -> top_p -> min_p -> temperature -> dist(seed).

``llama_sampler_sample`` applies the chain to the logits of one batch output and accepts the
chosen token into the chain itself (penalty history), so nothing else must call accept. Plain
greedy (no grammar, bias or penalty) skips it: numpy's argmax over the logits row (first
maximum, as llama.cpp's greedy sampler picks) takes ~20 us where the C sampler spends ~1 ms
building a 262k-entry candidate array for Gemma.

A grammar (``params.grammar``, GBNF) stands in front of the chain, as in llama-server's
``common_sampler_sample``: applied to the whole vocabulary it costs ~65 ms a step on Gemma's
262k entries (every piece checked against the grammar), so the chain first picks a token
without it, the grammar checks that one token, and only when it refuses are the logits sampled
again with the grammar applied first (grammar, then the chain). Either way the token is one the
grammar takes, and both the grammar and the chain accept it.
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
from llamahomed.engine.protocol import Failed, SamplingParams

PENALTY_LAST_N = 64
SEED_MASK = 0xFFFFFFFF
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
TOKEN_REF = re.compile(r"<\[\s*(\d+)\s*\]>")


def resolve_seed(seed: int | None) -> int:
    """The seed a sequence samples with: its own, else a fresh random one."""
    return random.getrandbits(31) if seed is None else seed & SEED_MASK


class SamplerChain:
    """One sequence's ``llama_sampler`` chain; ``close()`` frees it (idempotent).

    ``vocab`` is the model's (needed for a grammar); a grammar llama.cpp refuses raises
    :class:`GrammarError`.
    """

    def __init__(self, lib: Any, params: SamplingParams, n_vocab: int, seed: int,
                 prompt: Sequence[int], vocab: Any = None) -> None:
        self._lib = lib
        self._n_vocab = n_vocab
        self._grammar: Any = None
        self._ptr: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        penalised = (params.repeat_penalty != 1.0 or params.frequency_penalty != 0.0
                     or params.presence_penalty != 0.0)
        # numpy's argmax picks the chain's token: greedy with nothing before it in the chain
        self._argmax = params.temperature <= 0 and not penalised and not params.logit_bias
        if params.grammar:
            self._grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode("utf-8"),
                                                           GRAMMAR_ROOT)
            if not self._grammar:
                self.close()
                raise GrammarError("llama.cpp refused the grammar (failed to parse)")
            self._candidates = np.zeros(n_vocab, dtype=TOKEN_DATA)
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._array = lib.llama_token_data_array(
                self._candidates.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), n_vocab,
                -1, False)
            self._one = (lib.llama_token_data * 1)()
            self._one_array = lib.llama_token_data_array(self._one, 1, -1, False)
        self.greedy = self._argmax and self._grammar is None  # the whole sample is an argmax
        if params.logit_bias:
            biases = (lib.llama_logit_bias * len(params.logit_bias))(
                *(lib.llama_logit_bias(token, bias) for token, bias in params.logit_bias))
            self._add(lib.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        if penalised:
            penalties = lib.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, float(params.repeat_penalty),
                float(params.frequency_penalty), float(params.presence_penalty))
            for token in prompt[-PENALTY_LAST_N:]:  # prime the window
                lib.llama_sampler_accept(penalties, token)
            self._add(penalties)
        if params.temperature <= 0:
            self._add(lib.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(lib.llama_sampler_init_top_k(int(params.top_k)))
        if 0.0 < params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(float(params.top_p), 1))
        if params.min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(float(params.min_p), 1))
        self._add(lib.llama_sampler_init_temp(float(params.temperature)))
        self._add(lib.llama_sampler_init_dist(seed))

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._ptr, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from batch output ``index`` of the last decode."""
        if self._grammar is not None:
            return self._sample_constrained(self._logits(ctx, index))
        if self.greedy:
            return int(self._logits(ctx, index).argmax())
        return int(self._lib.llama_sampler_sample(self._ptr, ctx, index))

    def _logits(self, ctx: Any, index: int) -> Any:
        logits = self._lib.llama_get_logits_ith(ctx, index)
        if not logits:
            raise RuntimeError(f"no logits for batch output {index}")
        return np.ctypeslib.as_array(logits, shape=(self._n_vocab,))

    def _sample_constrained(self, logits: Any) -> int:
        """The chain's pick if the grammar takes it; else the chain's pick among what it takes."""
        lib = self._lib
        token = int(logits.argmax()) if self._argmax else self._apply(logits, grammar=False)
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        if self._one[0].logit == -math.inf:
            token = self._apply(logits, grammar=True)
        lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._ptr, token)
        return token

    def _apply(self, logits: Any, grammar: bool) -> int:
        """Run the chain (after the grammar, if asked) over fresh candidates; the selected id."""
        lib, candidates, array = self._lib, self._candidates, self._array
        candidates["id"] = self._ids
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array.size, array.selected, array.sorted = self._n_vocab, -1, False
        if grammar:
            lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        lib.llama_sampler_apply(self._ptr, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("the sampler chain selected no token")
        chosen = candidates[array.selected]
        if grammar and chosen["logit"] == -math.inf:  # accepting it would abort llama.cpp
            raise GrammarError("the grammar allows no token of this model's vocabulary here")
        return int(chosen["id"])

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


def invalid_params(seq_id: int, problem: dict[str, str]) -> dict[str, Any]:
    """The ``invalid_request`` error event for a sequence whose sampling params cannot run."""
    return Failed(seq_id, "invalid_request", f"{problem['field']}: {problem['message']}",
                  {"errors": [problem]}).wire()
