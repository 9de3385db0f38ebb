"""Prompt-cache entries evicted from the KV cache, kept in RAM as saved sequence state.

A slot's cached prefix is lost when the slot is taken by a request that shares less of it, or
when a full KV cache drops idle prefixes. Before that happens the engine saves the slot's KV
(``llama_state_seq_get_data``) here; a later request whose prompt starts with a saved prefix
restores it into a slot (``llama_state_seq_set_data``) instead of prefilling it again.

The cache is an LRU bounded in bytes (``system_settings.cache_size``). An entry whose tokens are
a prefix of a newer entry's tokens is dropped: the newer one serves every prompt the older could.
"""

from __future__ import annotations

import collections
from collections.abc import Sized
from dataclasses import dataclass


@dataclass(frozen=True)
class SavedState:
    """The KV state of one sequence holding ``tokens`` (positions ``0..len(tokens)-1``)."""

    tokens: tuple[int, ...]
    data: Sized  # the engine keeps llama.cpp's own ctypes buffer: no copy on save or restore


def common_prefix(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class StateCache:
    """Saved sequence states, least recently used first out, at most ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: collections.OrderedDict[tuple[int, ...], SavedState] = \
            collections.OrderedDict()
        self.used = 0
        self.hits = 0
        self.saves = 0

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, tokens: list[int]) -> bool:
        """Whether an entry already covers ``tokens`` (same tokens or a longer continuation)."""
        key = tuple(tokens)
        return any(entry[:len(key)] == key for entry in self._entries)

    def put(self, tokens: list[int], data: Sized) -> bool:
        """Keep ``data`` for ``tokens``, evicting LRU entries; False when it cannot fit."""
        if not tokens or len(data) > self.capacity or self.holds(tokens):
            return False
        key = tuple(tokens)
        for old in [k for k in self._entries if key[:len(k)] == k]:  # dominated by the new one
            self._drop(old)
        while self.used + len(data) > self.capacity:
            self._drop(next(iter(self._entries)))
        self._entries[key] = SavedState(key, data)
        self.used += len(data)
        self.saves += 1
        return True

    def best(self, tokens: list[int], whole: bool = False) -> tuple[SavedState | None, int]:
        """The entry sharing the longest prefix with ``tokens``, and that length.

        ``whole``: only entries that ``tokens`` start with entirely (a sliding-window model's
        state can be resumed only at its end).
        """
        best: SavedState | None = None
        length = 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens, tokens)
            if whole and n < len(entry.tokens):
                continue
            if n > length:
                best, length = entry, n
        return best, length

    def touch(self, entry: SavedState) -> None:
        """Mark ``entry`` as just used (it moves to the back of the LRU order)."""
        if entry.tokens in self._entries:
            self._entries.move_to_end(entry.tokens)
            self.hits += 1

    def _drop(self, key: tuple[int, ...]) -> None:
        self.used -= len(self._entries.pop(key).data)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.used, "capacity": self.capacity,
                "hits": self.hits, "saves": self.saves}
