"""Prompt-lookup speculative decoding (``speculate.py``) in the batched engine.

The tiny model is f32, whose CPU matmuls are batch-invariant, so a sequence's tokens with
drafts verified in the batch must equal its tokens without, bit for bit, for greedy and for
seeded sampling alike. Its random weights fall into loops, which the n-gram lookup drafts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.speculate import Drafter, NgramIndex, verify
from tests.engine.worker.test_batched import (  # noqa: F401 - the fixtures, shared
    PROMPTS,
    Collector,
    DecodeSpy,
    Start,
    run_all,
    start,
    tiny_512,
)

GREEDY = SamplingParams(max_tokens=48, temperature=0.0, repeat_penalty=1.0)
SEEDED = SamplingParams(max_tokens=48, temperature=0.05, top_k=40, top_p=0.95, seed=11,
                        repeat_penalty=1.0)
PENALIZED = SamplingParams(max_tokens=48, temperature=0.0, repeat_penalty=1.01,
                           presence_penalty=0.01)
REPEAT = "repeat this text: the cat sat on the mat and looked at the dog. " * 3
LOOP = "the cat sat on the mat and looked at the dog " * 6  # greedy output loops at once
ON = {"speculative": "ngram", "draft_max": 8}
OFF = {"speculative": "off"}


# -- the lookup and the adaptation, alone ----------------------------------------------------
def test_lookup_drafts_what_followed_the_longest_earlier_match() -> None:
    index = NgramIndex()
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 2, 3]
    index.extend(tokens)
    assert index.lookup(tokens, 3) == [7, 8, 2]  # "2 3" last occurred before 7 (3-gram: none)
    index.extend(tokens + [4])
    assert index.lookup(tokens + [4], 4) == [5, 9, 2, 3]  # the 3-gram "2 3 4" wins
    assert index.lookup([42], 4) == []


def test_drafter_pauses_after_misses_and_backs_off() -> None:
    drafter = Drafter(draft_max=4)
    history = [5, 6, 5, 6, 5]
    assert drafter.propose(history, 8) == [6, 5]  # a first draft is 2 tokens
    drafter.record(2, 2)
    assert drafter.propose(history, 8) == [6, 5, 6, 5]  # all accepted: 2 more, up to 4
    drafter.record(4, 1)
    assert len(drafter.propose(history, 8)) == 2  # one more than was accepted
    for _ in range(3):
        drafter.record(2, 0)
    assert [drafter.propose(history, 8) for _ in range(16)] == [[]] * 16  # paused 16 steps
    assert drafter.propose(history, 8)  # the probe
    drafter.record(1, 0)
    assert [drafter.propose(history, 8) for _ in range(32)] == [[]] * 32  # twice as long
    assert drafter.propose(history, 8)
    drafter.record(1, 1)  # an accepted token resets the pause
    drafter.record(3, 0)
    assert drafter.propose(history, 8)
    assert drafter.stats.drafted == 2 + 4 + 6 + 1 + 1 + 3 and drafter.stats.accepted == 4


def test_a_single_token_match_drafts_nothing() -> None:
    index = NgramIndex()
    tokens = [1, 2, 3, 9, 1]
    index.extend(tokens)
    assert index.lookup(tokens, 3) == []  # "1" occurred before, but no 2-gram did


def test_verify_stops_at_the_first_difference_and_where_the_sequence_ends() -> None:
    taken: list[tuple[int, bool]] = []

    def take(token: int, hit: bool) -> bool:
        taken.append((token, hit))
        return token != 99

    rows = [7, 8, 5, 1]
    assert verify([7, 8, 9], lambda i: rows[i], take) == 2
    assert taken == [(7, True), (8, True), (5, False)]
    taken.clear()
    assert verify([7, 8], lambda i: [7, 8, 3][i], take) == 2 and taken[-1] == (3, False)
    taken.clear()
    assert verify([7, 99, 4], lambda i: [7, 99][i], take) == 2  # ends on an accepted token
    assert taken == [(7, True), (99, True)]


# -- the engine, on the tiny f32 model ----------------------------------------------------------
def tokens_of(collector: Collector, seq: int) -> tuple[str, Any]:
    final = collector.final(seq)
    return collector.text(seq), (final["finish_reason"], final["usage"])


def both(start: Start, jobs: dict[int, tuple[str, SamplingParams]],
         **config: Any) -> tuple[Collector, Collector, Any]:
    plain = run_all(start, jobs, **OFF, **config)
    engine, spec = start(submit_first=tuple((s, p, g) for s, (p, g) in jobs.items()),
                         **ON, **config)
    spec.wait(list(jobs))
    return plain, spec, engine.draft_stats


@pytest.mark.parametrize(("params", "layouts"), [
    (GREEDY, ({"n_slots": 1}, {"n_slots": 4}, {"n_slots": 4, "n_batch": 8, "kv_unified": False},
              {"n_slots": 4, "kv_unified": False})),
    (PENALIZED, ({"n_slots": 1}, {"n_slots": 4})),
    (SEEDED, ({"n_slots": 1}, {"n_slots": 4, "kv_unified": False}))],
    ids=["greedy", "penalized", "seeded"])
def test_same_output_with_and_without_drafts(start: Start, params: SamplingParams,
                                             layouts: tuple[dict[str, Any], ...]) -> None:
    """Alone and four together; greedy, penalties (whose window must advance per verified
    token) and seeded sampling: the same text and usage as plain decoding, and drafts were
    accepted (the counts are deterministic).

    In one unified cache the cells freed by rejected drafts take other sequences' next tokens
    (llama.cpp moves its search head back to the first freed cell), so attention sums a
    sequence's cells in another order, and at float precision that can move a near-tie: seen for
    seeded sampling with four slots, and for greedy with four slots at ``n_batch`` 8, where the
    tiny model's flat logits tie often. Where each sequence has its own KV (one slot, or
    ``kv_unified`` off) every case here is exact, so those are the layouts pinned.
    """
    prompts = [REPEAT, LOOP, *PROMPTS[:3]]
    jobs = {i: (p, params) for i, p in enumerate(prompts)}
    for layout in layouts:
        plain, spec, stats = both(start, jobs, prompt_cache=False, **layout)
        for i in jobs:
            assert tokens_of(spec, i) == tokens_of(plain, i)
        assert stats.accepted > 0 and stats.drafted >= stats.accepted
        print(f"{params.temperature=} {layout}: drafted {stats.drafted} accepted "
              f"{stats.accepted} in {stats.steps} steps")


def test_drafts_cut_the_decode_calls(start: Start) -> None:
    """A looping greedy sequence takes fewer ``llama_decode`` calls than tokens."""
    spy = DecodeSpy()
    engine, collector = start(spy=spy, submit_first=((0, LOOP, GREEDY),), **ON, n_batch=512)
    collector.wait([0])
    assert collector.final(0)["usage"]["completion_tokens"] == 48
    assert spy.calls == 48 - engine.draft_stats.accepted  # one prefill call, then one per step
    assert engine.draft_stats.accepted > 0


def test_max_tokens_and_stop_strings_hold_within_a_draft(start: Start) -> None:
    """No token past ``max_tokens`` or a stop string, though drafts run further."""
    plain = run_all(start, {0: (LOOP, GREEDY)}, **OFF)
    text = plain.text(0)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    jobs = {1: (LOOP, SamplingParams(max_tokens=13, temperature=0.0, repeat_penalty=1.0)),
            2: (LOOP, SamplingParams(max_tokens=48, temperature=0.0, repeat_penalty=1.0,
                                       stop=(stop,)))}
    plain, spec, stats = both(start, jobs)
    assert spec.final(1)["usage"]["completion_tokens"] == 13
    assert tokens_of(spec, 1) == tokens_of(plain, 1)
    assert tokens_of(spec, 2) == tokens_of(plain, 2) and spec.final(2)["finish_reason"] == "stop"
    assert spec.final(2)["stop_sequence"] == stop
    assert stats.accepted > 0


def test_the_prompt_cache_holds_only_verified_tokens(start: Start) -> None:
    """A finished drafted sequence leaves exactly its tokens in the slot: the same prompt again,
    and that prompt continued by its own output, give the plain engine's text."""
    plain = run_all(start, {0: (LOOP, GREEDY)}, **OFF)
    continued = LOOP + plain.text(0)
    plain_next = run_all(start, {1: (continued, GREEDY)}, **OFF)
    engine, spec = start(**ON, n_slots=1)
    for seq, prompt in ((0, LOOP), (1, LOOP), (2, continued)):
        engine.submit(seq, prompt, GREEDY)
        spec.wait([seq])
    assert spec.text(0) == spec.text(1) == plain.text(0)
    assert spec.final(1)["cache"]["hit_tokens"] > 0
    assert spec.final(2)["cache"]["source"] == "slot"
    assert spec.final(2)["cache"]["hit_tokens"] > spec.final(1)["cache"]["hit_tokens"]
    assert spec.text(2) == plain_next.text(1)


def test_siblings_draft_each_for_itself(start: Start) -> None:
    """``n`` = 3 seeded choices of one prompt: each equals its plain counterpart."""
    def run(config: dict[str, str]) -> Collector:
        engine, collector = start(**config)
        engine.submit(0, LOOP, SEEDED, siblings=(1, 2))
        collector.wait([0, 1, 2])
        return collector

    plain, spec = run(OFF), run(ON)
    for i in range(3):
        assert tokens_of(spec, i) == tokens_of(plain, i)


def test_grammar_with_drafts(start: Start) -> None:
    """A grammar constrains every verified position as it does each plain token."""
    params = SamplingParams(max_tokens=40, temperature=0.0, repeat_penalty=1.0,
                            grammar='root ::= ("cat " | "mat " | "dog ")+')
    plain, spec, _ = both(start, {0: (LOOP, params)})
    assert tokens_of(spec, 0) == tokens_of(plain, 0)
    assert set(spec.text(0).split()[:-1]) <= {"cat", "mat", "dog"}  # max_tokens may cut the last


def test_a_full_kv_cache_drops_drafts_before_anything_else(start: Start) -> None:
    """A batch whose drafts do not fit is decoded again without them (``llama_decode`` 1)."""
    spy = DecodeSpy()
    failed: list[int] = []

    def fail_first_drafted(call: int) -> None:
        if not failed and engine.draft_stats.steps == 0 and any(s.draft for s in engine._live):
            failed.append(call)
            spy.fail_with = 1

    spy.on_call = fail_first_drafted
    engine, collector = start(spy=spy, **ON)
    engine.submit(0, LOOP, GREEDY)
    collector.wait([0])
    plain = run_all(start, {0: (LOOP, GREEDY)}, **OFF)
    assert failed and tokens_of(collector, 0) == tokens_of(plain, 0)
    assert engine.draft_stats.accepted > 0


# -- real models ---------------------------------------------------------------------------------
QUOTE = ("Repeat this text exactly: The committee met on Tuesday to review the budget. "
         "It approved the new library and postponed the bridge repairs until spring.\n"
         "Repeated text: The committee met on Tuesday")


@pytest.mark.gemma
@pytest.mark.parametrize("model", ["gemma_file", "smollm2_file"])
def test_quoting_on_real_models_drafts_and_keeps_the_text(start: Start, model: str,
                                                          request: pytest.FixtureRequest) -> None:
    """Quoting a sentence on Gemma 3 / SmolLM2 (quantized): most drafted tokens are accepted
    and the greedy text equals plain decoding on this prompt (one sequence, one slot: only the
    batch's row count differs, which can move a near-tie on quantized kernels, README)."""
    path: Path = request.getfixturevalue(model)
    params = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    config = {"model_path": str(path), "n_ctx": 1024, "n_slots": 1}
    plain, spec, stats = both(start, {0: (QUOTE, params)}, **config)
    print(f"{model}: drafted {stats.drafted} accepted {stats.accepted} in {stats.steps} steps")
    assert spec.text(0) == plain.text(0)
    assert stats.accepted * 2 > stats.drafted
