"""A long prompt arriving while sequences decode prefills in chunks that keep their steps short.

The spy makes ``llama_decode`` cost what a CPU would, in proportion (2 ms a step plus 1 ms a
token), so the budget's running averages have something real to learn from.
"""

from __future__ import annotations

import time
from typing import Any

from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.prefill_budget import FIRST_CHUNK, MIN_CHUNK, PrefillBudget
from tests.engine.worker.test_batched import (  # noqa: F401
    LONG_PROMPT,
    DecodeSpy,
    Start,
    start,
    tiny_512,
)

STREAM = SamplingParams(max_tokens=60, temperature=0.0, repeat_penalty=1.0)
SHORT = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=1.0)


class CostlySpy(DecodeSpy):
    """Records each step's (decode tokens, prompt tokens) and sleeps as a slow machine would."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: Any = None
        self.steps: list[tuple[int, int]] = []

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.steps.append(self.engine._filled)  # noqa: SLF001
        time.sleep(0.002 + 0.001 * batch.n_tokens)
        return super().llama_decode(ctx, batch)


def run(start: Start, ratio: float) -> tuple[CostlySpy, str, str]:  # noqa: F811
    spy = CostlySpy()
    engine, collector = start(spy=spy, n_batch=256, prefill_step_ratio=ratio)
    spy.engine = engine
    engine.submit(1, "Once upon a time", STREAM)
    with collector.cond:  # the stream is decoding before the long prompt arrives
        assert collector.cond.wait_for(lambda: any(
            e["kind"] in ("text", "error") for _, f in collector.frames for e in f), 60)
    engine.submit(2, LONG_PROMPT, SHORT)
    collector.wait([1, 2])
    return spy, collector.text(1), collector.text(2)


def test_prompt_chunks_beside_decoding_are_capped(start: Start) -> None:  # noqa: F811
    capped, stream, answer = run(start, 1.8)
    mixed = [prompt for decoding, prompt in capped.steps if decoding and prompt]
    assert len(mixed) >= 401 // FIRST_CHUNK  # the long prompt went in beside the stream
    assert max(mixed[1:]) <= FIRST_CHUNK and MIN_CHUNK in mixed  # learned: the floor
    filled, stream_alone, answer_alone = run(start, 0)
    full = [prompt for decoding, prompt in filled.steps if decoding and prompt]
    assert max(full) == 255  # without the cap a step takes all the batch has room for
    assert (stream, answer) == (stream_alone, answer_alone)  # chunking changes no token


def test_the_budget_learns_from_steps() -> None:
    budget = PrefillBudget(n_batch=512, ratio=2.0)
    assert budget.limit(0) == 512 and budget.limit(4) == FIRST_CHUNK
    for _ in range(30):
        budget.observe(4, 0, 0.040)  # 40 ms decode steps
        budget.observe(4, 100, 0.040 + 100 * 0.0005)  # 0.5 ms a prompt token
    assert 70 <= budget.limit(4) <= 90  # (2 - 1) * 40 ms / 0.5 ms = 80
    slow = PrefillBudget(n_batch=512, ratio=1.1)
    slow.observe(1, 0, 0.010)
    slow.observe(1, 50, 0.010 + 50 * 0.01)
    assert slow.limit(1) == MIN_CHUNK  # a prompt always makes progress
    assert PrefillBudget(n_batch=512, ratio=0).limit(4) == 508
