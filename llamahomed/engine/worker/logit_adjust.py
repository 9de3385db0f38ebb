"""Logit bias and penalties on the few entries they touch, and the top-k candidates, in numpy.

llama.cpp's penalties sampler walks every candidate of the vocabulary (262,144 for Gemma) and
looks each one up in its token counts, and ``llama_sampler_sample`` first copies the whole logits
row into a candidate array: together ~1.5 ms a step on Gemma, per sequence. Yet a bias or a
penalty changes at most ``len(logit_bias) + 64`` logits. :class:`LogitAdjust` changes exactly
those, in the logits row itself, and puts them back afterwards, so the row stays the model's for
anything that reads it later (logprobs, sibling sequences sampling the same output).

The arithmetic is llama.cpp's (``llama_sampler_logit_bias`` then ``llama_sampler_penalties``):
the bias is added; then for a token seen ``c > 0`` times in the window a logit ``l`` becomes
``l * repeat`` when ``l <= 0`` and ``l / repeat`` otherwise, minus ``c * frequency + presence``.
The window is the last 64 tokens, primed with the prompt's, as llama-server's.

:func:`top_candidates` finds the ``k`` largest logits without sorting or partitioning the whole
row: the ``j``-th largest of every 64th entry is a threshold that ~``64 j`` entries pass (one
vectorised comparison); the top ``k`` of those are the top ``k`` of the row whenever at least
``k`` passed, and a full ``argpartition`` is the fallback when fewer did.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from llamahomed.engine.protocol import SamplingParams

PENALTY_LAST_N = 64
STRIDE = 64


class LogitAdjust:
    """One sequence's bias and penalty window; ``apply`` edits a row, ``restore`` undoes it."""

    def __init__(self, params: SamplingParams, prompt: Sequence[int]) -> None:
        self._bias = {token: float(value) for token, value in params.logit_bias}
        self._repeat = float(params.repeat_penalty)
        self._frequency = float(params.frequency_penalty)
        self._presence = float(params.presence_penalty)
        self.penalised = self._repeat != 1.0 or self._frequency != 0.0 or self._presence != 0.0
        self._window: deque[int] = deque(maxlen=PENALTY_LAST_N)
        self._counts: Counter[int] = Counter()
        for token in prompt[-PENALTY_LAST_N:]:
            self.accept(token)
        self._saved: tuple[Any, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self._bias) or self.penalised

    def accept(self, token: int) -> None:
        """``token`` was sampled: it enters the penalty window (the oldest one leaves)."""
        if not self.penalised:
            return
        if len(self._window) == self._window.maxlen:
            old = self._window[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._window.append(token)
        self._counts[token] += 1

    def apply(self, row: Any) -> None:
        """Bias and penalise ``row`` in place; call :meth:`restore` once the pick is made."""
        touched = set(self._bias) | set(self._counts)
        if not touched:
            self._saved = None
            return
        ids = np.fromiter(touched, dtype=np.int64, count=len(touched))
        old = row[ids].copy()
        new = old + np.fromiter((self._bias.get(int(t), 0.0) for t in ids), np.float32, len(ids))
        counts = np.fromiter((self._counts.get(int(t), 0) for t in ids), np.float32, len(ids))
        seen = counts > 0
        if self.penalised and seen.any():
            with np.errstate(divide="ignore"):  # repeat 0 divides as llama.cpp does
                scaled = np.where(new <= 0, new * self._repeat, new / self._repeat)
            scaled -= counts * self._frequency + self._presence
            new = np.where(seen, scaled, new).astype(np.float32)
        row[ids] = new
        self._saved = (ids, old)

    def restore(self, row: Any) -> None:
        if self._saved is not None:
            ids, old = self._saved
            row[ids] = old
            self._saved = None


def top_candidates(row: Any, k: int) -> Any:
    """The ids of the ``k`` largest entries of ``row`` (in no particular order)."""
    n = row.shape[0]
    if k >= n:
        return np.arange(n)
    if n >= STRIDE * 64 and k <= n // (STRIDE * 4):
        sample = row[::STRIDE]
        j = 2 * -(-k // STRIDE) + 6  # ~64 j entries pass: several times k, rarely fewer than k
        threshold = np.partition(sample, -j)[-j]
        passed = np.flatnonzero(row >= threshold)
        if passed.size >= k:
            return passed[np.argpartition(row[passed], -k)[-k:]]
    return np.argpartition(row, -k)[-k:]
