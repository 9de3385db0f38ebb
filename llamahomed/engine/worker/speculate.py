"""Prompt-lookup (n-gram) speculative decoding: drafts from a sequence's own history.

No draft model. A sequence's history is its prompt and the tokens it generated so far; where the
last ``n`` tokens (``n`` = 3, then 2; a single token matches too often where nothing repeats)
occurred before, the tokens that followed them
there are the draft. Quoting, extracting, editing or repeating text drafts long runs that the
model then accepts; the batched engine feeds the draft behind the sequence's next token in the
same ``llama_decode`` (one logits row per position) and verifies it with the sequence's own
sampler chain (:func:`verify`).

Verification is exact for every sampling mode, not only greedy: the chain samples position
``i`` from logits computed after exactly the tokens the sequence would have had without
speculation (the draft up to ``i`` equals what was sampled), and it samples the positions in
order, each one once, so penalties, grammar state and the RNG advance as they would token by
token. The first sampled token that differs from the draft is kept and the rest of the draft is
dropped (its KV cells are removed), so every step yields at least the one token it would have
yielded anyway.

:class:`Drafter` adapts per sequence: the first draft is 2 tokens, it grows by 2 after a step
that accepted all of it (up to ``draft_max``) and shrinks to one more than what was accepted
otherwise (every drafted position costs a logits row, and on a small model the output head is
most of a token's compute); three drafts in a row with nothing accepted pause drafting for 16
steps, and each further probe that finds nothing doubles the pause (up to 512 steps), so a sequence that never repeats itself pays for
one drafted token every few hundred steps. Any accepted token resets the pause.

Drafts go into a step only while at most ``DRAFT_WIDTH`` sequences decode in it: a narrow step
is bound by reading the weights, so extra rows are nearly free, while a wide one is bound by
compute and every drafted row (a logits row through the output head too) costs what a token
does. Measured at 32 clients, greedy, Gemma on 2 cores: 122.5 tok/s drafting against 166.3
without (llama-server 150.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

DRAFT_WIDTH = 8  # drafts only while at most this many sequences decode in a step
NGRAM_MAX = 3
NGRAM_MIN = 2  # a one-token match drafts too often where nothing repeats
MISSES_BEFORE_PAUSE = 3
PAUSE_MIN, PAUSE_MAX = 16, 512


@dataclass
class DraftStats:
    """Tokens drafted and accepted (by one sequence, or by an engine in all)."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # decode steps that carried a draft

    def add(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        self.steps += 1


class NgramIndex:
    """Where each n-gram of a token list last occurred: n-gram -> index of the token after it.

    ``extend`` indexes the tokens appended since its last call; an n-gram is indexed only once
    the token following it is known, so the list's own last n tokens find an earlier occurrence.
    """

    def __init__(self) -> None:
        self._maps: dict[int, dict[tuple[int, ...], int]] = {
            n: {} for n in range(NGRAM_MIN, NGRAM_MAX + 1)}
        self._seen = 0  # tokens whose follower has been indexed

    def extend(self, tokens: Sequence[int]) -> None:
        for end in range(max(self._seen, 1), len(tokens)):
            for n, grams in self._maps.items():
                if end >= n:
                    grams[tuple(tokens[end - n:end])] = end
        self._seen = max(self._seen, len(tokens))

    def lookup(self, tokens: Sequence[int], limit: int) -> list[int]:
        """``limit`` tokens that followed the longest earlier match of the list's tail."""
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if len(tokens) <= n:
                continue
            at = self._maps[n].get(tuple(tokens[-n:]))
            if at is not None:
                return _continue(tokens, at, limit)
        return []


def _continue(tokens: Sequence[int], at: int, limit: int) -> list[int]:
    """``limit`` tokens from ``at`` on; past the list's end the draft repeats itself (a match
    close to the end is a loop: what follows the tail is the loop again)."""
    draft = list(tokens[at:at + limit])
    while len(draft) < limit:
        draft.append(draft[len(draft) - (len(tokens) - at)])
    return draft


class Drafter:
    """One sequence's drafts and how well they have done (see the module doc)."""

    def __init__(self, draft_max: int) -> None:
        self.draft_max = draft_max
        self.stats = DraftStats()
        self._index = NgramIndex()
        self._length = min(2, draft_max)  # grows with what is accepted
        self._misses = 0
        self._pause = 0
        self._backoff = PAUSE_MIN

    def propose(self, history: Sequence[int], room: int) -> list[int]:
        """The draft to feed after ``history`` (whose last token is the one being fed), at most
        ``room`` tokens; empty while paused or where the tail never occurred before."""
        self._index.extend(history)
        if self._pause > 0:
            self._pause -= 1
            return []
        limit = min(self._length, room)
        return self._index.lookup(history, limit) if limit > 0 else []

    def record(self, drafted: int, accepted: int) -> None:
        """Adapt to a verified draft: ``accepted`` of its ``drafted`` tokens were taken."""
        self.stats.add(drafted, accepted)
        if accepted == drafted:
            self._length = min(self.draft_max, self._length + 2)
        else:
            self._length = max(1, accepted + 1)
        if accepted:
            self._misses, self._backoff = 0, PAUSE_MIN
            return
        self._misses += 1
        if self._misses >= MISSES_BEFORE_PAUSE:
            self._pause = self._backoff
            self._backoff = min(PAUSE_MAX, self._backoff * 2)
            self._misses = MISSES_BEFORE_PAUSE - 1  # after the pause, one probe decides


def verify(draft: Sequence[int], sample: Callable[[int], int],
           take: Callable[[int, bool], bool]) -> int:
    """Sample the positions of a decoded draft in order; how many draft tokens were taken.

    ``sample(i)`` samples the logits row of position ``i`` (0: the fed token's row, i: the row
    of draft token i - 1); ``take(token, hit)`` accounts for the sampled token (``hit``: it
    equals the draft, so the next row is valid) and says whether the sequence goes on. The loop
    ends at the first token that differs from the draft, after the last row, or where ``take``
    ends the sequence (EOS, a stop string, ``max_tokens``).
    """
    for i in range(len(draft) + 1):
        token = sample(i)
        hit = i < len(draft) and token == draft[i]
        if not take(token, hit):
            return i + hit
        if not hit:
            return i
    return len(draft)
