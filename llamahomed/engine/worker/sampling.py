"""Per-sequence sampler chains on llama.cpp's sampler API (``llama_sampler_chain_*``).

Each live sequence owns one chain, so sequences decoding in the same batch never share sampler
state (grammar state, penalty history, RNG). The chain, each stage only where asked for:

* grammar (``params.grammar``, GBNF): tokens the grammar cannot take next get -inf. At the
  head, so nothing after it can pick a token the grammar refuses.
* logit bias (``params.logit_bias``: token id -> added to its logit; -100 bans, +100 forces).
* penalties: ``repeat_penalty`` (skipped at 1.0), ``frequency_penalty`` and
  ``presence_penalty`` (skipped at 0), over the last 64 tokens. The window is primed with the
  prompt's last 64 tokens (as llama-server does), so a penalty also covers prompt text.
* ``temperature <= 0``: greedy (argmax); the seed is ignored (as llama-server: penalties apply
  before the greedy pick). Otherwise top_k -> top_p -> min_p -> temperature -> dist(seed).

``llama_sampler_sample`` applies the chain to the logits of one batch output and accepts the
chosen token into the chain itself (grammar state, penalty history), so nothing else must call
accept. Plain greedy (no grammar, bias or penalty) skips it: numpy's argmax over the logits row
(first maximum, as llama.cpp's greedy sampler picks) takes ~20 us where the C sampler spends
~1 ms building a 262k-entry candidate array for Gemma. A grammar costs more again: it checks
every candidate token of the vocabulary against the grammar at each step (see
``scripts/bench_grammar.py``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from llamahomed.engine.grammar import GRAMMAR_ROOT, GrammarError, grammar_problem
from llamahomed.engine.protocol import Failed, SamplingParams

PENALTY_LAST_N = 64
SEED_MASK = 0xFFFFFFFF
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
        self._ptr: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        penalised = (params.repeat_penalty != 1.0 or params.frequency_penalty != 0.0
                     or params.presence_penalty != 0.0)
        # numpy's argmax fast path: greedy with nothing before it in the chain
        self.greedy = (params.temperature <= 0 and not penalised and not params.grammar
                       and not params.logit_bias)
        if params.grammar:
            grammar = lib.llama_sampler_init_grammar(vocab, params.grammar.encode("utf-8"),
                                                     GRAMMAR_ROOT)
            if not grammar:
                self.close()
                raise GrammarError("llama.cpp refused the grammar (failed to parse)")
            self._add(grammar)
        if params.logit_bias:
            biases = (lib.llama_logit_bias * len(params.logit_bias))(
                *(lib.llama_logit_bias(token, bias) for token, bias in params.logit_bias))
            self._add(lib.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        if penalised:
            penalties = lib.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, float(params.repeat_penalty),
                float(params.frequency_penalty), float(params.presence_penalty))
            for token in prompt[-PENALTY_LAST_N:]:  # prime the window (not the grammar)
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
