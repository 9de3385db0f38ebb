"""Log probabilities of sampled tokens, in OpenAI's shape, lined up with the text sent.

A token's log probability is the log-softmax of the model's own logits row at its position:
before logit bias, penalties, grammar or temperature (OpenAI reports the model's distribution,
not the sampler's), so the same text gets the same numbers whatever the sampling. One max, one
sum of exponentials over the vocabulary (~0.3 ms on Gemma's 262,144 entries, only for
sequences that ask), and the ``top`` largest entries by :func:`~.logit_adjust.top_candidates`,
sorted by log probability, ties to the lower token id.

Text leaves a sequence later than its tokens when it is held back (a partial UTF-8 character, a
possible stop string): :class:`LogprobTrail` keeps the entries of tokens whose text has not been
sent, and hands them out with the text that releases them. Tokens a stop string swallowed are
dropped with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from llamahomed.engine.worker.logit_adjust import top_candidates

MAX_TOP = 20
Entry = dict[str, Any]


def row_logprobs(row: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """``token``'s log probability in ``row`` and the ``top`` most likely (id, logprob) pairs."""
    peak = float(row.max())
    total = peak + math.log(float(np.exp(row - peak, dtype=np.float32).sum(dtype=np.float64)))
    chosen = float(row[token]) - total
    if top <= 0:
        return chosen, []
    ids = top_candidates(row, min(top, row.shape[0]))
    ranked = sorted((int(i) for i in ids), key=lambda i: (-float(row[i]), i))
    return chosen, [(i, float(row[i]) - total) for i in ranked]


def entry(piece: Callable[[int], bytes], token: int, raw: bytes, logprob: float,
          top: list[tuple[int, float]], wants_top: bool) -> Entry:
    """OpenAI's ``{token, logprob, bytes, top_logprobs}`` for one sampled token, whose piece
    is ``raw`` (``piece`` gives the alternatives')."""
    def one(raw: bytes, value: float) -> Entry:
        return {"token": raw.decode("utf-8", "replace"), "logprob": value, "bytes": list(raw)}

    found = one(raw, logprob)
    found["top_logprobs"] = [one(piece(i), v) for i, v in top] if wants_top else []
    return found


class LogprobTrail:
    """The entries of tokens whose text is still held back."""

    def __init__(self) -> None:
        self._held: list[Entry] = []

    @property
    def held(self) -> bool:
        return bool(self._held)

    def add(self, found: Entry) -> None:
        self._held.append(found)

    def release(self) -> list[Entry]:
        """The entries that go with the text sent now."""
        held, self._held = self._held, []
        return held

    def drop(self) -> None:
        self._held = []
