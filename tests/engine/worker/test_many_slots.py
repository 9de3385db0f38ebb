"""More slots than the old default of 8: 24 concurrent greedy sequences in 32 slots of one
unified KV cache get exactly the text each gets alone (real llama.cpp, the tiny f32 model, whose
CPU matmuls are batch-invariant, so any mixing of positions, seq ids or KV would show)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.batched import BatchedEngine
from tests.engine.worker.test_batched import Collector
from tests.fixtures.tiny_gguf import write_tiny_llama

WORDS = ["fox", "sea", "hill", "lamp", "door", "rain", "bird", "tree", "salt", "road", "moon",
         "iron", "wolf", "snow", "gold", "leaf", "fire", "wind", "rock", "milk", "star", "ship",
         "rose", "bell"]
PROMPTS = [f"{i} the {w} and the {WORDS[-i - 1]} said" for i, w in enumerate(WORDS)]
PARAMS = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def tiny_2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny2k") / "tiny-2k.gguf"
    write_tiny_llama(path, n_ctx=2048)
    return path


def run(model: Path, n_slots: int) -> Collector:
    config: dict[str, Any] = {"model_path": str(model), "n_ctx": 2048, "n_batch": 256,
                              "n_threads": 2, "n_gpu_layers": 0, "n_slots": n_slots,
                              "prompt_cache": False}
    collector = Collector()
    engine = BatchedEngine.load(config, collector)
    for seq, prompt in enumerate(PROMPTS):  # all queued before the loop: they run together
        engine.submit(seq, prompt, PARAMS)
    thread = threading.Thread(target=engine.run, name="decode", daemon=True)
    thread.start()
    try:
        collector.wait(list(range(len(PROMPTS))))
    finally:
        engine.stop()
        thread.join(timeout=30)
    assert engine.info()["n_slots"] == n_slots
    return collector


def test_24_sequences_in_32_slots_match_their_lone_runs(tiny_2k: Path) -> None:
    alone = run(tiny_2k, 1)
    together = run(tiny_2k, 32)
    live = max(sum(1 for e in frame if e["kind"] == "text") for frame in together.decode_frames())
    assert live > 8  # more than the old default of 8 decoded in one step
    texts = {alone.text(i) for i in range(len(PROMPTS))}
    assert len(texts) > len(PROMPTS) // 2  # different prompts, different texts
    for i in range(len(PROMPTS)):
        assert together.text(i) == alone.text(i), PROMPTS[i]
        assert together.final(i)["usage"] == alone.final(i)["usage"]
