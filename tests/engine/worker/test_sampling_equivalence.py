"""The numpy-side bias, penalties and top-k pick the tokens llama.cpp's own whole chain picks.

The reference is the chain the engine used before: logit_bias -> penalties (primed with the
prompt) -> top_k -> top_p -> min_p -> temp -> dist(seed), each llama.cpp's sampler, run by
``llama_sampler_sample`` over the whole vocabulary. Both sample the same logits row of a real
model (SmolLM2, a 49,152-token vocabulary, so :func:`top_candidates` takes its threshold path)
step after step, feeding back the reference's token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest

from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.worker.logit_adjust import LogitAdjust, top_candidates
from llamahomed.engine.worker.sampling import SamplerChain

PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
STEPS = 40
CASES = [
    SamplingParams(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1),
    SamplingParams(temperature=1.3, top_k=5, top_p=1.0, min_p=0.0, repeat_penalty=1.5,
                   frequency_penalty=0.4, presence_penalty=-0.3),
    SamplingParams(temperature=0.0, top_k=40, repeat_penalty=1.3, presence_penalty=0.6),
    SamplingParams(temperature=0.9, top_k=0, top_p=0.9, min_p=0.0, repeat_penalty=0.9,
                   logit_bias=((28, 5.0), (29, -100.0))),
    SamplingParams(temperature=0.8, top_k=200, top_p=0.99, min_p=0.01, repeat_penalty=1.0,
                   logit_bias=((30, 3.0),)),
]


class Model:
    def __init__(self, path: Path) -> None:
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_threads = 512, 512, 2
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (llama_cpp.llama_token * (len(raw) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, False)
        return list(buf[:n])

    def start(self, tokens: list[int]) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._pos = 0
        self.feed(tokens)

    def feed(self, tokens: list[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        batch = llama_cpp.llama_batch_get_one(array, len(tokens))
        assert llama_cpp.llama_decode(self.ctx, batch) == 0
        self._pos += len(tokens)

    def row(self) -> Any:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1),
                                     shape=(self.n_vocab,))

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


@pytest.fixture(scope="module")
def model(smollm2_file: Path) -> Iterator[Model]:
    loaded = Model(smollm2_file)
    yield loaded
    loaded.close()


def reference(params: SamplingParams, n_vocab: int, seed: int, prompt: list[int]) -> Any:
    lib = llama_cpp
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if params.logit_bias:
        biases = (lib.llama_logit_bias * len(params.logit_bias))(
            *(lib.llama_logit_bias(t, b) for t, b in params.logit_bias))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(
            n_vocab, len(params.logit_bias), biases))
    penalties = lib.llama_sampler_init_penalties(n_vocab, 64, params.repeat_penalty,
                                                 params.frequency_penalty, params.presence_penalty)
    for token in prompt[-64:]:
        lib.llama_sampler_accept(penalties, token)
    lib.llama_sampler_chain_add(chain, penalties)
    if params.temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(params.min_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain


@pytest.mark.parametrize("params", CASES, ids=range(len(CASES)))
def test_same_tokens_as_llama_cpps_whole_chain(model: Model, params: SamplingParams) -> None:
    prompt = model.tokenize(PROMPT)
    ref = reference(params, model.n_vocab, 1234, prompt)
    ours = SamplerChain(llama_cpp, params, model.n_vocab, 1234, prompt, model.vocab)
    model.start(prompt)
    picked: list[int] = []
    try:
        for step in range(STEPS):
            before = model.row().copy()
            mine = ours.sample(model.ctx, -1)
            assert np.array_equal(model.row(), before), "the logits row was not restored"
            theirs = llama_cpp.llama_sampler_sample(ref, model.ctx, -1)
            assert mine == theirs, f"step {step}: {mine} != llama.cpp's {theirs} after {picked}"
            picked.append(theirs)
            model.feed([theirs])
    finally:
        ours.close()
        llama_cpp.llama_sampler_free(ref)
    assert len(set(picked)) > 1


def test_penalty_window_slides_like_llama_cpps() -> None:
    """After 64 more tokens the prompt's tokens have left the window."""
    adjust = LogitAdjust(SamplingParams(repeat_penalty=2.0), [7, 7, 9])
    row = np.full(16, 4.0, dtype=np.float32)
    row[3] = -2.0
    adjust.apply(row)
    assert row[7] == 2.0 and row[9] == 2.0 and row[3] == -2.0
    adjust.restore(row)
    assert (row[[7, 9]] == 4.0).all()
    for _ in range(64):
        adjust.accept(3)
    adjust.apply(row)
    assert row[7] == 4.0 and row[3] == -4.0
    adjust.restore(row)


@pytest.mark.parametrize("k", [1, 5, 40, 300, 5000])
def test_top_candidates_are_the_k_largest(k: int) -> None:
    rng = np.random.default_rng(k)
    for trial in range(20):
        row = (rng.standard_normal(262_144) * (1 + trial)).astype(np.float32)
        if trial % 3 == 0:  # a peaked row: few entries above any sampled threshold
            row[rng.integers(0, row.size, 3)] += 50
        got = np.sort(row[top_candidates(row, k)])
        assert got.size == k
        assert np.array_equal(got, np.sort(row)[-k:])


def test_top_candidates_small_rows() -> None:
    row = np.array([3, 1, 2, 5, 4], dtype=np.float32)
    assert sorted(top_candidates(row, 2).tolist()) == [3, 4]
    assert sorted(top_candidates(row, 9).tolist()) == [0, 1, 2, 3, 4]
