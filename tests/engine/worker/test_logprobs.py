"""Log probabilities from the batched engine against llama-cpp-python's own logits.

The reference evaluates the same tokens with ``Llama.eval`` and takes a float64 log-softmax of
its logits row: the engine's numbers must be the model's distribution (before penalties and
sampling), its alternatives the most likely tokens in order, and its entries must line up with
the text that was sent.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from llamahomed.engine.protocol import SamplingParams
from tests.engine.worker.test_batched import Collector, Start, start, tiny_512  # noqa: F401

PROMPT = "The quick brown fox"


def entries_of(collector: Collector, seq: int) -> list[dict]:
    return [e for ev in collector.events(seq) if ev["kind"] == "text"
            for e in ev.get("logprobs") or []]


def reference(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)


@pytest.mark.parametrize("penalty", [1.0, 1.8])
def test_logprobs_are_the_models_distribution(start: Start, tiny_512: Path,  # noqa: F811
                                              penalty: float) -> None:
    engine, collector = start()
    params = SamplingParams(max_tokens=12, temperature=0.0, repeat_penalty=penalty,
                            logprobs=True, top_logprobs=4)
    engine.submit(1, PROMPT, params)
    collector.wait([1])
    entries = entries_of(collector, 1)
    final = collector.final(1)
    assert len(entries) == final["usage"]["completion_tokens"] == 12
    assert "".join(e["token"] for e in entries) == collector.text(1)
    llm = reference(tiny_512)
    piece = [bytes(llm.detokenize([t])) for t in range(llm.n_vocab())]
    llm.eval(llm.tokenize(PROMPT.encode(), add_bos=True))
    for found in entries:
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        logprobs = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        # byte-fallback tokens share their bytes with one-character pieces: the id is the one
        # of those pieces whose log probability the entry reports
        same = [t for t in range(len(piece)) if piece[t] == bytes(found["bytes"])]
        token = min(same, key=lambda t: abs(logprobs[t] - found["logprob"]))
        assert found["logprob"] == pytest.approx(logprobs[token], abs=2e-3)
        best = np.argsort(-logprobs, kind="stable")[:4]
        assert [bytes(t["bytes"]) for t in found["top_logprobs"]] == [piece[t] for t in best]
        assert [t["logprob"] for t in found["top_logprobs"]] == pytest.approx(
            list(logprobs[best]), abs=2e-3)
        if penalty == 1.0:  # greedy on the model's own distribution: the top one is chosen
            assert token == best[0]
        llm.eval([token])


def test_held_back_text_brings_its_logprobs_along(start: Start) -> None:  # noqa: F811
    """A stop string holds text back and swallows its own tokens; every sent character still
    has its token's entry, and none is reported for what the stop string took."""
    engine, collector = start()
    plain = SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0, logprobs=True)
    engine.submit(1, PROMPT, plain)
    collector.wait([1])
    text = collector.text(1)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    engine.submit(2, PROMPT, SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0,
                                            logprobs=True, stop=(stop,)))
    collector.wait([2])
    entries, sent = entries_of(collector, 2), collector.text(2)
    assert sent == text[:text.index(stop)]
    assert "".join(e["token"] for e in entries) == sent[:len("".join(e["token"] for e in entries))]
    assert len(entries) < len(entries_of(collector, 1))
    assert all(e["top_logprobs"] == [] for e in entries)


def test_no_logprobs_unless_asked(start: Start) -> None:  # noqa: F811
    engine, collector = start()
    engine.submit(1, PROMPT, SamplingParams(max_tokens=4, temperature=0.0))
    collector.wait([1])
    assert all("logprobs" not in ev for ev in collector.events(1))
