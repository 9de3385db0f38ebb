"""The continuous-batching engine, in process: the tiny random Llama and the real Gemma 3 270M.

Each test loads a ``BatchedEngine`` with a collecting ``emit``, runs ``engine.run`` in a thread
named "decode" and stops it at the end. ``DecodeSpy`` stands in for the ``llama_cpp`` module inside
one engine to count (and, where a test needs it, slow down or fail) ``llama_decode`` calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from llamahomed.engine.worker.batched import BatchedEngine
from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.sequential import SequentialEngine
from tests.fixtures.tiny_gguf import write_tiny_llama

Event = dict[str, Any]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0)
PROMPTS = ["The quick brown fox", "Hello world, ünïcödé ☃", "Once upon a time there was",
           "1, 2, 3, 4,", "A long time ago in a galaxy far away", "def main():"]
LONG_PROMPT = "the cat sat on the mat and looked at the dog " * 25  # 401 tokens


class Collector:
    """The engine's ``emit``: every frame, with the thread that sent it; waits for results."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frames: list[tuple[str, list[Event]]] = []
        self.on_event: Callable[[Event], None] | None = None

    def __call__(self, events: list[Event]) -> None:
        with self.cond:
            self.frames.append((threading.current_thread().name, list(events)))
            self.cond.notify_all()
        for event in events:
            if self.on_event is not None:
                self.on_event(event)

    def events(self, seq: int) -> list[Event]:
        with self.cond:
            return [e for _, frame in self.frames for e in frame if e["seq"] == seq]

    def text(self, seq: int) -> str:
        return "".join(e["text"] for e in self.events(seq) if e["kind"] == "text")

    def final(self, seq: int) -> Event:
        return next(e for e in self.events(seq) if e["kind"] in ("done", "error"))

    def wait(self, seqs: list[int], timeout: float = 300) -> None:
        def finished() -> bool:
            ends = {e["seq"] for _, f in self.frames for e in f if e["kind"] in ("done", "error")}
            return set(seqs) <= ends

        with self.cond:
            assert self.cond.wait_for(finished, timeout), f"{seqs} not finished in {timeout} s"

    def decode_frames(self) -> list[list[Event]]:
        return [frame for name, frame in self.frames if name == "decode"]


class DecodeSpy:
    """The ``llama_cpp`` module with ``llama_decode`` counted, optionally slowed or failed."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.fail_with: int | None = None
        self.on_call: Callable[[int], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(llama_cpp, name)

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        time.sleep(self.delay)
        if self.fail_with is not None:
            rc, self.fail_with = self.fail_with, None
            return rc
        return int(llama_cpp.llama_decode(ctx, batch))


Start = Callable[..., tuple[BatchedEngine, Collector]]
Job = tuple[int, str, SamplingParams]


@pytest.fixture(scope="module")
def tiny_512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny512") / "tiny-512.gguf"
    write_tiny_llama(path, n_ctx=512)
    return path


@pytest.fixture
def start(tiny_512: Path) -> Iterator[Start]:
    """``start(spy=None, submit_first=(), **config)``: a running engine and its collector."""
    running: list[tuple[Any, threading.Thread]] = []

    def launch(spy: DecodeSpy | None = None, submit_first: tuple[Job, ...] = (),
               **overrides: Any) -> tuple[BatchedEngine, Collector]:
        config = {"model_path": str(tiny_512), "n_ctx": 512, "n_batch": 64, "n_threads": 2,
                  "n_gpu_layers": 0, "n_slots": 4, **overrides}
        collector = Collector()
        engine = BatchedEngine.load(config, collector)
        if spy is not None:
            engine._lib = spy  # noqa: SLF001 - the test's window on llama_decode
        for seq, prompt, params in submit_first:  # queued before the loop runs: one composition
            engine.submit(seq, prompt, params)
        thread = threading.Thread(target=engine.run, name="decode", daemon=True)
        thread.start()
        running.append((engine, thread))
        return engine, collector

    yield launch
    for engine, thread in running:
        engine.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def run_all(start: Start, jobs: dict[int, tuple[str, SamplingParams]], **config: Any) -> Collector:
    """Queue every job before the loop starts, wait until all are finished."""
    _, collector = start(submit_first=tuple((s, p, g) for s, (p, g) in jobs.items()), **config)
    collector.wait(list(jobs))
    return collector


# -- the tiny model -----------------------------------------------------------------------------
def test_info(start: Start) -> None:
    unified, _ = start()
    assert unified.info() | {"n_ctx": 512, "n_ctx_seq": 512, "n_slots": 4, "engine": "batched",
                             "kv_unified": True} == unified.info()
    split, _ = start(kv_unified=False, n_slots=2)
    assert split.info()["n_ctx_seq"] * 2 == split.info()["n_ctx"]


def test_usage_matches_llama_tokenize(start: Start, tiny_512: Path) -> None:
    vocab_only = llama_cpp.Llama(model_path=str(tiny_512), vocab_only=True, verbose=False)
    counts = [len(vocab_only.tokenize(p.encode(), add_bos=True, special=False)) for p in PROMPTS]
    vocab_only.close()
    collector = run_all(start, {i: (p, GREEDY) for i, p in enumerate(PROMPTS)})
    for i, count in enumerate(counts):
        accepted = collector.events(i)[0]
        assert accepted == {"seq": i, "kind": "accepted", "prompt_tokens": count}
        done = collector.final(i)
        assert done["kind"] == "done" and done["finish_reason"] == "length"
        assert done["usage"] == {"prompt_tokens": count, "completion_tokens": 16,
                                 "total_tokens": count + 16}
        assert set(done["timings"]) == {"queue_ms", "prefill_ms", "decode_ms"}
        assert sum(e["tokens"] for e in collector.events(i) if e["kind"] == "text") <= 16


@pytest.mark.parametrize("config", [{}, {"kv_unified": False}, {"n_batch": 8}])
def test_greedy_alone_equals_concurrent(start: Start, config: dict[str, Any]) -> None:
    """One slot (each sequence alone) and four slots give the very same greedy text.

    The tiny model is f32, whose CPU matmuls are batch-invariant, so this is bit-exact and
    checks the batching itself (positions, seq ids, KV isolation, output indices).
    """
    params = SamplingParams(max_tokens=40, temperature=0.0, repeat_penalty=1.0)
    jobs = {i: (p, params) for i, p in enumerate(PROMPTS)}
    alone = run_all(start, jobs, n_slots=1, prompt_cache=False, **config)
    together = run_all(start, jobs, n_slots=4, prompt_cache=False, **config)
    for i in jobs:
        assert together.text(i) == alone.text(i)
        assert together.final(i)["usage"] == alone.final(i)["usage"]


def test_more_submissions_than_slots_queue(start: Start) -> None:
    collector = run_all(start, {i: (p, GREEDY) for i, p in enumerate(PROMPTS)}, n_slots=2)
    finals = [collector.final(i) for i in range(len(PROMPTS))]
    assert all(f["kind"] == "done" and f["finish_reason"] == "length" for f in finals)
    live_per_frame = [len({e["seq"] for e in f if e["kind"] == "text"})
                      for f in collector.decode_frames()]
    assert max(live_per_frame) == 2
    assert finals[-1]["timings"]["queue_ms"] > finals[0]["timings"]["queue_ms"]


def test_one_emit_per_step_with_several_sequences(start: Start) -> None:
    spy = DecodeSpy()
    _, collector = start(spy=spy, submit_first=tuple((i, PROMPTS[i], GREEDY) for i in range(3)))
    collector.wait([0, 1, 2])
    frames = collector.decode_frames()
    assert len(frames) <= spy.calls  # never more than one frame per llama_decode
    assert spy.calls == 16  # one step: all prompts (one batch), then 15 decode steps
    assert any(len({e["seq"] for e in f}) == 3 for f in frames)
    for frame in frames:
        per_seq = [e["seq"] for e in frame if e["kind"] == "text" and e["tokens"] == 1]
        assert len(per_seq) == len(set(per_seq))  # at most one new token per sequence per step


def test_cancel_mid_prefill_frees_the_slot(start: Start) -> None:
    """Cancelled during its 3rd prefill step, a long prompt stops there; the queued one runs."""
    spy = DecodeSpy(delay=0.005)
    engine, collector = start(spy=spy, n_slots=1, n_batch=8)
    spy.on_call = lambda n: engine.cancel(1) if n == 3 else None
    engine.submit(1, LONG_PROMPT, GREEDY)
    engine.submit(2, "hi", GREEDY)
    collector.wait([1, 2])
    done = collector.final(1)
    assert done["finish_reason"] == "cancelled" and done["usage"]["completion_tokens"] == 0
    assert [e["kind"] for e in collector.events(1)] == ["accepted", "done"]
    assert collector.final(2)["finish_reason"] == "length"
    assert spy.calls == 3 + 16  # 3 prefill steps of the long prompt, then 16 steps of "hi"


def test_cancel_mid_decode_and_while_queued(start: Start) -> None:
    engine, collector = start(spy=DecodeSpy(delay=0.002), n_slots=1)
    texts = {"n": 0}

    def cancel_after_three(event: Event) -> None:
        if event["seq"] == 1 and event["kind"] == "text":
            texts["n"] += 1
            if texts["n"] == 3:
                engine.cancel(1)

    collector.on_event = cancel_after_three
    long = SamplingParams(max_tokens=200, temperature=0.0)
    for seq in (1, 2, 3):
        engine.submit(seq, "The quick brown fox", long if seq == 1 else GREEDY)
    engine.cancel(3)  # still queued behind 1 and 2
    collector.wait([1, 2, 3])
    events = collector.events(1)
    assert events[-1]["kind"] == "done" and events[-1]["finish_reason"] == "cancelled"
    assert 3 <= events[-1]["usage"]["completion_tokens"] < 20
    assert collector.final(2)["finish_reason"] == "length"
    assert [e["kind"] for e in collector.events(3)] == ["accepted", "done"]
    assert collector.final(3)["finish_reason"] == "cancelled"


def test_stop_strings_and_max_tokens(start: Start) -> None:
    params = SamplingParams(max_tokens=40, temperature=0.0)
    full = run_all(start, {1: ("The quick brown fox", params)}).text(1)
    stop = full[12:16]
    cut = full.find(stop)
    stopped = run_all(start, {1: ("The quick brown fox", SamplingParams(
        max_tokens=40, temperature=0.0, stop=(stop,)))})
    assert stopped.text(1) == full[:cut]
    assert stopped.final(1)["finish_reason"] == "stop"
    assert stopped.final(1)["usage"]["completion_tokens"] < 40
    short = run_all(start, {1: ("The quick brown fox", SamplingParams(max_tokens=5,
                                                                      temperature=0.0))})
    assert short.final(1)["usage"]["completion_tokens"] == 5
    assert short.final(1)["finish_reason"] == "length"


def test_context_length(start: Start) -> None:
    engine, collector = start(kv_unified=False, n_slots=2)  # 256 tokens per sequence
    engine.submit(1, LONG_PROMPT, GREEDY)
    error = collector.final(1)
    n = error["details"]["prompt_tokens"]
    assert error == {"seq": 1, "kind": "error", "code": "context_length_exceeded",
                     "message": f"the prompt has {n} tokens; this model is loaded with a context "
                                "of 256 tokens, which must also hold at least one generated token",
                     "details": {"prompt_tokens": n, "context_length": 256}}
    unified, collector = start()  # one sequence may use all 512
    unified.submit(2, LONG_PROMPT, SamplingParams(max_tokens=500, temperature=0.0))
    collector.wait([2])
    done = collector.final(2)
    assert done["finish_reason"] == "length" and done["usage"]["total_tokens"] == 512


def test_seeds_reproducible(start: Start) -> None:
    def sampled(seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=30, temperature=1.0, seed=seed)

    first = run_all(start, {1: ("Hello", sampled(42))}, prompt_cache=False)
    mixed = run_all(start, {1: ("Hello", sampled(42)), 2: ("Hello", sampled(43)),
                            3: ("Hello", sampled(42))}, prompt_cache=False)
    assert mixed.text(1) == mixed.text(3) == first.text(1)
    assert mixed.text(2) != first.text(1)


def test_full_kv_cache_fails_one_sequence_and_never_hangs(start: Start) -> None:
    """Two sequences may each use the whole unified 512 but not together: one gets
    ``server_busy`` and the other runs to the end of its context."""
    params = SamplingParams(max_tokens=600, temperature=0.0)
    collector = run_all(start, {1: ("The quick brown fox", params), 2: ("Hello world", params)},
                        n_slots=2)
    finals = sorted((collector.final(1), collector.final(2)), key=lambda e: e["kind"])
    assert finals[0]["kind"] == "done" and finals[0]["usage"]["total_tokens"] == 512
    assert finals[1]["kind"] == "error" and finals[1]["code"] == "server_busy"


def test_decode_error_fails_the_batch_and_the_engine_goes_on(start: Start) -> None:
    spy = DecodeSpy()
    spy.on_call = lambda n: setattr(spy, "fail_with", -3) if n == 4 else None
    engine, collector = start(spy=spy, submit_first=((1, "Hello", GREEDY), (2, "Bye", GREEDY)))
    collector.wait([1, 2])
    assert {collector.final(s)["code"] for s in (1, 2)} == {"internal_error"}
    engine.submit(3, "Hello", GREEDY)
    collector.wait([3])
    assert collector.final(3)["finish_reason"] == "length"


def test_prompt_cache(start: Start) -> None:
    engine, collector = start(n_slots=2)
    prompt = "Once upon a time there was a fox"
    for seq in (1, 2):
        engine.submit(seq, prompt, GREEDY)
        collector.wait([seq])
    n = collector.events(1)[0]["prompt_tokens"]
    assert collector.final(1)["cache"] == {"hit_tokens": 0, "source": ""}
    assert collector.final(2)["cache"] == {"hit_tokens": n - 1, "source": "slot"}
    assert collector.text(2) == collector.text(1)
    engine.submit(3, prompt + " and a dog", GREEDY)
    collector.wait([3])
    assert collector.final(3)["cache"]["hit_tokens"] >= n - 1
    off, collector = start(prompt_cache=False)
    for seq in (1, 2):
        off.submit(seq, prompt, GREEDY)
        collector.wait([seq])
    assert collector.final(2)["cache"] == {"hit_tokens": 0, "source": ""}


def test_evicted_prefix_is_restored_from_the_ram_state_cache(start: Start) -> None:
    """One slot, two long prompts in turn: the first comes back from RAM, same greedy text."""
    first, second = LONG_PROMPT[:200], "a completely different story " * 8
    engine, collector = start(n_slots=1, state_cache_bytes=64 << 20)
    for seq, prompt in enumerate((first, second, first, second), start=1):
        engine.submit(seq, prompt, GREEDY)
        collector.wait([seq])
    n = collector.events(1)[0]["prompt_tokens"]
    assert collector.final(3)["cache"] == {"hit_tokens": n - 1, "source": "ram"}
    assert collector.final(4)["cache"]["source"] == "ram"
    assert collector.text(3) == collector.text(1)
    assert collector.text(4) == collector.text(2)
    stats = engine._saved.stats() if engine._saved else {}  # noqa: SLF001
    assert stats["hits"] == 2 and 0 < stats["bytes"] <= stats["capacity"]
    off, collector = start(n_slots=1)  # no RAM cache: the first prompt is prefilled again
    for seq, prompt in enumerate((first, second, first), start=1):
        off.submit(seq, prompt, GREEDY)
        collector.wait([seq])
    assert collector.final(3)["cache"]["hit_tokens"] <= 1  # the BOS token, still in the slot


def test_state_cache_too_small_keeps_nothing(start: Start) -> None:
    engine, collector = start(n_slots=1, state_cache_bytes=1024)
    for seq, prompt in enumerate((LONG_PROMPT[:200], "another prompt " * 10, LONG_PROMPT[:200]), 1):
        engine.submit(seq, prompt, GREEDY)
        collector.wait([seq])
    assert collector.final(3)["cache"]["hit_tokens"] <= 1  # the BOS token, still in the slot
    assert engine._saved is not None and len(engine._saved) == 0  # noqa: SLF001


def test_live_sequences_share_a_prefix(start: Start) -> None:
    """A request whose prompt starts like a running one's reuses its KV cells (seq_cp)."""
    system = LONG_PROMPT[:240]
    long_run = SamplingParams(max_tokens=120, temperature=0.0, repeat_penalty=1.0)
    alone = run_all(start, {2: (system + " question two", GREEDY)}, prompt_cache=False)
    spy = DecodeSpy(delay=0.01)
    engine, collector = start(spy=spy)
    engine.submit(1, system + " question one", long_run)
    with collector.cond:  # wait until the first request has its prompt in KV and is decoding
        assert collector.cond.wait_for(lambda: len(collector.text(1)) > 0, 30)
    engine.submit(2, system + " question two", GREEDY)
    collector.wait([1, 2])
    cache = collector.final(2)["cache"]
    assert cache["source"] == "shared"
    assert cache["hit_tokens"] >= collector.events(1)[0]["prompt_tokens"] - 4
    assert collector.text(2) == alone.text(2)
    assert collector.final(1)["finish_reason"] == "length"


# -- Gemma 3 270M -------------------------------------------------------------------------------
GEMMA_PROMPTS = ["The capital of France is", "Write a haiku about the sea:", "1, 2, 3, 4,",
                 "The meaning of life is"]


@pytest.mark.gemma
def test_gemma_greedy_alone_equals_concurrent(start: Start, gemma_file: Path) -> None:
    """Greedy text of each sequence alone equals its text in a batch of four.

    llama.cpp's CPU kernels are not batch-invariant (upstream issues #6583, #7052): the repacked
    Q4_K kernels take a gemm path for several rows and a gemv path for one, so logits move by up
    to ~1 between the two. Prompts whose greedy path has a near-tie (e.g. "Once upon a time")
    can then flip. Which batch layout a run gets depends on when each submission reaches the
    decode thread, so a late near-tie can flip from run to run. Exact equality is proven on the
    f32 tiny model (batch-invariant); here the opening of every text must match its lone run and
    sequences must never mix.
    """
    params = SamplingParams(max_tokens=32, temperature=0.0, repeat_penalty=1.0)
    jobs = {i: (p, params) for i, p in enumerate(GEMMA_PROMPTS)}
    config = {"model_path": str(gemma_file), "n_ctx": 1024, "prompt_cache": False}
    alone = run_all(start, jobs, n_slots=1, **config)
    together = run_all(start, jobs, n_slots=4, **config)
    for i in jobs:
        assert together.text(i)[:24] == alone.text(i)[:24]
        others = [alone.text(j)[:24] for j in jobs if alone.text(j)[:24] != alone.text(i)[:24]]
        assert not any(together.text(i).startswith(o) for o in others)
        assert together.final(i)["usage"]["completion_tokens"] == 32


@pytest.mark.gemma
def test_gemma_matches_sequential_engine(start: Start, gemma_file: Path) -> None:
    """Same tokens, same text as SequentialEngine, given the same attention kernel.

    ``Llama`` creates its context with flash attention off while llama.cpp's own default is
    auto (on, on CPU); with the default the texts can part at a near-tie. So can they with
    speculative drafts, which put several rows of one sequence in a batch (the quantized
    kernels' many-row path, see the README).
    """
    params = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    prompts = GEMMA_PROMPTS[:2]
    batched = run_all(start, {i: (p, params) for i, p in enumerate(prompts)},
                      model_path=str(gemma_file), n_ctx=1024, flash_attn=False,
                      speculative="off")  # drafts decode rows together: another kernel path
    collector = Collector()
    sequential = SequentialEngine.load({"model_path": str(gemma_file), "n_ctx": 1024,
                                        "n_batch": 64, "n_threads": 2}, collector)
    thread = threading.Thread(target=sequential.run, name="decode", daemon=True)
    thread.start()
    for i, prompt in enumerate(prompts):
        sequential.submit(i, prompt, params)
    collector.wait([0, 1])
    sequential.stop()
    thread.join(timeout=30)
    sequential.llm.close()
    for i in range(len(prompts)):
        assert batched.text(i) == collector.text(i)
        assert batched.final(i)["usage"] == collector.final(i)["usage"]


@pytest.mark.gemma
def test_gemma_prompt_cache_on_swa_model(start: Start, gemma_file: Path) -> None:
    """Gemma 3's iSWA cache: a repeated prompt reuses all but its last token, same text."""
    engine, collector = start(model_path=str(gemma_file), n_ctx=1024, n_slots=2)
    params = SamplingParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    for seq in (1, 2):
        engine.submit(seq, GEMMA_PROMPTS[0], params)
        collector.wait([seq])
    n = collector.events(1)[0]["prompt_tokens"]
    assert collector.final(2)["cache"] == {"hit_tokens": n - 1, "source": "slot"}
    assert collector.text(2) == collector.text(1)


@pytest.mark.gemma
def test_gemma_ram_state_cache_and_sharing_on_swa_model(start: Start, gemma_file: Path) -> None:
    """Gemma 3's iSWA cache round-trips through RAM and shares cells: same greedy text."""
    system = "You are a helpful assistant. Answer briefly and truthfully. " * 3
    params = SamplingParams(max_tokens=12, temperature=0.0, repeat_penalty=1.0)
    alone = run_all(start, {1: (system + GEMMA_PROMPTS[0], params),
                            2: (system + GEMMA_PROMPTS[3], params)},
                    model_path=str(gemma_file), n_ctx=1024, n_slots=2, prompt_cache=False)
    engine, collector = start(model_path=str(gemma_file), n_ctx=1024, n_slots=1,
                              state_cache_bytes=256 << 20)
    for seq, prompt in ((1, GEMMA_PROMPTS[0]), (2, "Something else entirely " * 6),
                        (3, GEMMA_PROMPTS[0])):
        engine.submit(seq, system + prompt, params)
        collector.wait([seq])
    assert collector.final(3)["cache"]["source"] == "ram"
    assert collector.text(3) == alone.text(1)
    spy = DecodeSpy(delay=0.02)
    engine, collector = start(spy=spy, model_path=str(gemma_file), n_ctx=1024, n_slots=2)
    engine.submit(1, system + GEMMA_PROMPTS[0],
                  SamplingParams(max_tokens=40, temperature=0.0, repeat_penalty=1.0))
    with collector.cond:
        assert collector.cond.wait_for(lambda: len(collector.text(1)) > 0, 60)
    engine.submit(2, system + GEMMA_PROMPTS[3], params)
    collector.wait([1, 2])
    assert collector.final(2)["cache"]["source"] == "shared"
    assert collector.text(2) == alone.text(2)
