"""The RAM state cache: a byte-bounded LRU of saved sequence states keyed by token prefix."""

from __future__ import annotations

from llamahomed.engine.worker.state_cache import StateCache, common_prefix


def test_best_finds_the_longest_shared_prefix() -> None:
    cache = StateCache(1000)
    assert cache.put([1, 2, 3, 4], b"x" * 10)
    assert cache.put([1, 2, 9], b"y" * 10)
    entry, n = cache.best([1, 2, 3, 4, 5])
    assert entry is not None and entry.tokens == (1, 2, 3, 4) and n == 4
    entry, n = cache.best([1, 2, 9, 9])
    assert entry is not None and entry.data == b"y" * 10 and n == 3
    assert cache.best([7]) == (None, 0)


def test_bounded_in_bytes_least_recently_used_out() -> None:
    cache = StateCache(100)
    cache.put([1], b"a" * 40)
    cache.put([2], b"b" * 40)
    first, _ = cache.best([1])
    assert first is not None
    cache.touch(first)                  # [2] is now the least recently used
    cache.put([3], b"c" * 40)
    assert cache.used == 80 and len(cache) == 2
    assert cache.best([2]) == (None, 0)
    assert cache.best([1])[1] == 1 and cache.best([3])[1] == 1
    assert not cache.put([4], b"d" * 101)  # larger than the whole cache: refused
    assert cache.stats() == {"entries": 2, "bytes": 80, "capacity": 100, "hits": 1, "saves": 3}


def test_a_longer_entry_replaces_its_prefixes_and_covered_ones_are_not_saved() -> None:
    cache = StateCache(1000)
    cache.put([1, 2], b"a")
    cache.put([1, 2, 3], b"bb")
    assert len(cache) == 1 and cache.used == 2
    assert cache.holds([1, 2]) and cache.holds([1, 2, 3]) and not cache.holds([1, 3])
    assert not cache.put([1, 2], b"c")


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], (1, 2, 4)) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5, 6], [5, 6, 7]) == 2


def test_whole_matches_only_entries_the_prompt_starts_with() -> None:
    cache = StateCache(1000)
    cache.put([1, 2, 3, 4], b"a")
    assert cache.best([1, 2, 3, 9])[1] == 3
    assert cache.best([1, 2, 3, 9], whole=True) == (None, 0)
    assert cache.best([1, 2, 3, 4, 5], whole=True)[1] == 4
