"""The request id travels into the real worker and back; the batched engine reports KV use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import PoolObserver, SequenceStream, WorkerHandle
from llamahomed.engine.protocol import Done, Failed
from llamahomed.engine.protocol import SamplingParams
from llamahomed.core.errors import ShuttingDown


class Recorder(PoolObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def first_token(self, model: str, stream: SequenceStream) -> None:
        self.calls.append(("first", stream.first_token_at - stream.submitted_at))

    def next_token(self, model: str, stream: SequenceStream, gap: float) -> None:
        self.calls.append(("next", gap))

    def finished(self, model: str, stream: SequenceStream, event: Done | Failed) -> None:
        self.calls.append(("finished", type(event).__name__))


def config(path: Path, **extra: Any) -> LoadConfig:
    return LoadConfig(model_id="tiny", model_path=str(path), n_ctx=256, n_batch=64, n_threads=1,
                      n_gpu_layers=0, n_slots=2, engine="batched", **extra)


async def test_the_request_id_comes_back_on_the_last_event_from_the_worker(
        tiny_model_file: Path) -> None:
    worker = WorkerHandle(config(tiny_model_file))
    recorder = Recorder()
    worker.observer = recorder
    await worker.start(60)
    try:
        stream = await worker.submit("hello", SamplingParams(max_tokens=5, temperature=0),
                                     request_id="req-abc")
        assert stream.request_id == "req-abc"
        events = [event async for event in stream.events()]
        assert isinstance(events[-1], Done)
        assert events[-1].request_id == "req-abc"
        assert [c[0] for c in recorder.calls] == ["first", "next", "next", "next", "next",
                                                  "finished"]
        assert all(seconds >= 0 for kind, seconds in recorder.calls if kind != "finished")
        # an error event (prompt too long) carries it too
        refused = await worker.submit("word " * 400, SamplingParams(max_tokens=5),
                                      request_id="req-long")
        error = await refused.next_event()
        assert isinstance(error, Failed) and error.request_id == "req-long"
    finally:
        await worker.stop()


async def test_kv_usage_rises_while_a_sequence_runs_and_returns_to_zero(
        tiny_model_file: Path) -> None:
    worker = WorkerHandle(config(tiny_model_file))
    await worker.start(60)
    try:
        seen: list[float] = []
        stream = await worker.submit("one two three four", SamplingParams(max_tokens=60,
                                                                          temperature=0))
        async for event in stream.events():
            seen.append(worker.kv_usage)
        assert max(seen) > 0
        assert worker.kv_usage == 0.0
    finally:
        await worker.stop()


async def test_abort_all_ends_in_flight_sequences_with_the_error_and_refuses_new_ones(
        tiny_model_file: Path) -> None:
    worker = WorkerHandle(config(tiny_model_file))
    await worker.start(60)
    try:
        stream = await worker.submit("count", SamplingParams(max_tokens=200, temperature=0))
        assert await worker.abort_all(ShuttingDown("the daemon is shutting down")) == 1
        events = [event async for event in stream.events()]
        assert isinstance(events[-1], Failed) and events[-1].code == "shutting_down"
        assert worker.in_flight == 0 and worker.admission.running == 0
        with pytest.raises(ShuttingDown):
            await worker.submit("again", SamplingParams(max_tokens=2))
    finally:
        await worker.stop()
