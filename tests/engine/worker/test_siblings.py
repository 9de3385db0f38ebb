"""Sibling sequences (``n`` choices of one prompt) in the batched engine, on the tiny Llama.

One submit carries several sequence ids; the first (the leader) prefills the prompt, the others
take its KV with ``llama_memory_seq_cp`` and sample their first token from its logits. The
tiny model is f32 (batch-invariant on CPU), so greedy siblings match a lone request exactly.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.sequential import SequentialEngine
from tests.engine.worker.test_batched import (  # noqa: F401 - the fixtures, shared
    GREEDY,
    LONG_PROMPT,
    Collector,
    DecodeSpy,
    Start,
    start,
    tiny_512,
)

PROMPT = "Once upon a time there was a fox"


class TokenSpy(DecodeSpy):
    """Counts the tokens every ``llama_decode`` was given."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.tokens += int(batch.n_tokens)
        return super().llama_decode(ctx, batch)


def alone(start: Start, prompt: str, params: SamplingParams, **config: Any) -> Collector:
    """One request on an engine of its own, no prompt cache: the reference text."""
    _, collector = start(submit_first=((1, prompt, params),), prompt_cache=False, **config)
    collector.wait([1])
    return collector


@pytest.mark.parametrize("kv_unified", [True, False])
def test_greedy_siblings_decode_the_prompt_once_and_match_a_lone_request(
        start: Start, kv_unified: bool) -> None:
    reference = alone(start, PROMPT, GREEDY, kv_unified=kv_unified)
    spy = TokenSpy()
    engine, collector = start(spy=spy, kv_unified=kv_unified, prompt_cache=False)
    engine.submit(10, PROMPT, GREEDY, siblings=[11, 12])
    collector.wait([10, 11, 12])
    n = collector.events(10)[0]["prompt_tokens"]
    assert [collector.events(s)[0] for s in (11, 12)] == [
        {"seq": s, "kind": "accepted", "prompt_tokens": n} for s in (11, 12)]
    for seq in (10, 11, 12):
        assert collector.text(seq) == reference.text(1) != ""
        assert collector.final(seq)["usage"] == reference.final(1)["usage"]
    assert collector.final(10)["cache"] == {"hit_tokens": 0, "source": ""}
    for seq in (11, 12):
        assert collector.final(seq)["cache"] == {"hit_tokens": n, "source": "shared"}
    # the prompt once, then each sibling feeds back all of its tokens but the last
    assert spy.tokens == n + 3 * (GREEDY.max_tokens - 1)


def test_seeded_siblings_are_reproducible_and_each_uses_seed_plus_its_index(
        start: Start) -> None:
    params = SamplingParams(max_tokens=30, temperature=1.0, seed=42)
    runs = []
    for _ in range(2):
        engine, collector = start(prompt_cache=False)
        engine.submit(1, "Hello", params, siblings=[2, 3])
        collector.wait([1, 2, 3])
        runs.append([collector.text(s) for s in (1, 2, 3)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3
    seed_43 = alone(start, "Hello", SamplingParams(max_tokens=30, temperature=1.0, seed=43))
    assert runs[0][1] == seed_43.text(1)


def test_more_siblings_than_slots_all_finish_sharing_the_prompt(start: Start) -> None:
    reference = alone(start, PROMPT, GREEDY)
    engine, collector = start(n_slots=2)
    engine.submit(1, PROMPT, GREEDY, siblings=[2, 3, 4, 5])
    collector.wait([1, 2, 3, 4, 5])
    n = collector.events(1)[0]["prompt_tokens"]
    assert all(collector.text(s) == reference.text(1) for s in range(1, 6))
    assert collector.final(2)["cache"] == {"hit_tokens": n, "source": "shared"}
    for seq in (3, 4, 5):  # admitted once a slot freed: the slot's cache or a live sibling's KV
        cache = collector.final(seq)["cache"]
        assert cache["hit_tokens"] == n - 1 and cache["source"] in ("slot", "shared")


def test_cancelling_one_sibling_leaves_the_others_running(start: Start) -> None:
    reference = alone(start, PROMPT, GREEDY)
    engine, collector = start()

    def on_event(event: dict[str, Any]) -> None:
        if event["seq"] == 12 and event["kind"] == "text":
            engine.cancel(12)

    collector.on_event = on_event
    engine.submit(10, PROMPT, GREEDY, siblings=[11, 12])
    collector.wait([10, 11, 12])
    assert collector.final(12)["finish_reason"] == "cancelled"
    for seq in (10, 11):
        assert collector.final(seq)["finish_reason"] == "length"
        assert collector.text(seq) == reference.text(1)


def test_the_leader_ending_first_keeps_the_kv_its_siblings_share(start: Start) -> None:
    """The leader is cancelled after its first token and a new request takes its slot (the
    only free one), which clears the leader's sequence id there: the cells the siblings share
    carry their ids too, so their text is unchanged."""
    reference = alone(start, PROMPT, GREEDY)
    engine, collector = start(n_slots=3)

    def on_event(event: dict[str, Any]) -> None:
        if event["seq"] == 10 and event["kind"] == "text":
            engine.cancel(10)
        if event["seq"] == 10 and event["kind"] == "done":
            engine.submit(20, "a completely different prompt", GREEDY)

    collector.on_event = on_event
    engine.submit(10, PROMPT, GREEDY, siblings=[11, 12])
    collector.wait([10, 11, 12, 20])
    assert collector.final(10)["finish_reason"] == "cancelled"
    for seq in (11, 12):
        assert collector.text(seq) == reference.text(1)
    assert collector.final(20)["finish_reason"] == "length"


def test_a_leader_cancelled_during_prefill_hands_its_prefix_on(start: Start) -> None:
    """A long prompt prefills over several steps (n_batch 64); the leader is cancelled after
    the first and a waiting sibling after the second: the first remaining sibling goes on from
    the leader's computed prefix and the last one shares the whole prompt from it."""
    params = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=1.0)
    reference = alone(start, LONG_PROMPT, params)
    spy = DecodeSpy()
    engine, collector = start(spy=spy, prompt_cache=False)
    spy.on_call = lambda n: engine.cancel({1: 10, 2: 12}[n]) if n in (1, 2) else None
    engine.submit(10, LONG_PROMPT, params, siblings=[11, 12, 13])
    collector.wait([10, 11, 12, 13])
    n = collector.events(10)[0]["prompt_tokens"]
    assert [collector.final(s)["finish_reason"] for s in (10, 12)] == ["cancelled"] * 2
    assert collector.text(11) == collector.text(13) == reference.text(1)
    heir = collector.final(11)["cache"]
    assert heir["source"] == "shared" and 0 < heir["hit_tokens"] < n
    assert collector.final(13)["cache"] == {"hit_tokens": n, "source": "shared"}


def test_siblings_with_a_prompt_too_long_all_fail(start: Start) -> None:
    engine, collector = start(kv_unified=False, n_slots=2)  # 256 tokens per sequence
    engine.submit(1, LONG_PROMPT, GREEDY, siblings=[2])
    collector.wait([1, 2])
    assert {collector.final(s)["code"] for s in (1, 2)} == {"context_length_exceeded"}


def test_llama_cpp_keeps_shared_cells_when_one_sequence_id_is_removed(start: Start) -> None:
    """What the siblings rely on, asked of llama.cpp directly: after ``seq_cp`` and a
    ``seq_rm`` of the source, the copy still holds every position."""
    engine, collector = start()
    engine.submit(1, PROMPT, GREEDY)
    collector.wait([1])  # the decode thread now waits, idle, leaving the context alone
    (used,) = [slot.index for slot in engine._slots if slot.cached]  # noqa: SLF001
    other = (used + 1) % engine.n_slots
    mem = llama_cpp.llama_get_memory(engine._ctx)  # noqa: SLF001 - llama.cpp's own view
    n = llama_cpp.llama_memory_seq_pos_max(mem, used) + 1
    assert n > 0
    llama_cpp.llama_memory_seq_cp(mem, used, other, -1, -1)
    llama_cpp.llama_memory_seq_rm(mem, used, -1, -1)
    assert llama_cpp.llama_memory_seq_pos_max(mem, used) == -1
    assert (llama_cpp.llama_memory_seq_pos_min(mem, other),
            llama_cpp.llama_memory_seq_pos_max(mem, other)) == (0, n - 1)
    engine._slots[used].cached = []  # noqa: SLF001 - what the engine believes, kept true


def test_the_sequential_engine_runs_siblings_one_after_another(tiny_512: Path) -> None:
    """No KV to share there, but the same op: one stream per sibling, seed + i each."""
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=42)
    collector = Collector()
    engine = SequentialEngine.load({"model_path": str(tiny_512), "n_ctx": 512, "n_batch": 64,
                                    "n_threads": 2}, collector)
    thread = threading.Thread(target=engine.run, name="decode", daemon=True)
    thread.start()
    try:
        engine.submit(1, "Hello", params, siblings=[2])
        engine.submit(3, "Hello", SamplingParams(max_tokens=12, temperature=1.0, seed=43))
        collector.wait([1, 2, 3])
    finally:
        engine.stop()
        thread.join(timeout=30)
        engine.llm.close()
    assert collector.text(2) == collector.text(3) != collector.text(1)
    assert all(collector.final(s)["finish_reason"] == "length" for s in (1, 2, 3))
