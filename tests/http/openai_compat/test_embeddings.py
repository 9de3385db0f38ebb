"""``POST /v1/embeddings`` for every model, through the real daemon and real llama.cpp: the
GGUF's pooling where it declares one, mean pooling otherwise, L2-normalised vectors of the
model's ``n_embd``; text and token-array inputs; float and base64; the official SDK."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from llamahomed.registry.gguf_meta import read_model_info
from tests.http.openai_compat.conftest import GEMMA, N_CTX, POOLED, SMOL, TINY

MODELS = [pytest.param(TINY, id="tiny-llama"),
          pytest.param(SMOL, id="smollm2", marks=pytest.mark.smollm2),
          pytest.param(GEMMA, id="gemma", marks=pytest.mark.gemma)]
TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force.",
         "The cat sat on the mat."]


def embed(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def refused(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def vectors(reply: dict[str, Any]) -> list[list[float]]:
    assert [d["index"] for d in reply["data"]] == list(range(len(reply["data"])))
    assert all(d["object"] == "embedding" for d in reply["data"])
    return [d["embedding"] for d in reply["data"]]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_embeds_unit_vectors_of_its_own_width(
        http: httpx.Client, model: str, model_path: dict[str, Path]) -> None:
    reply = embed(http, model=model, input=TEXTS)
    assert reply["object"] == "list" and reply["model"] == model
    got = vectors(reply)
    n_embd = read_model_info(model_path[model]).embedding_length
    assert n_embd and all(len(v) == n_embd for v in got)
    for vector in got:
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-6)
    assert got[0] == got[2]  # the same text, the same vector
    assert float(np.dot(got[0], got[1])) < 0.9999  # different texts differ


@pytest.mark.parametrize("model", MODELS)
def test_a_batch_keeps_its_order_and_matches_one_at_a_time(http: httpx.Client, model: str) -> None:
    texts = ["alpha beta", "a completely different sentence", "zeta", "alpha beta gamma"]
    batch = vectors(embed(http, model=model, input=texts))
    for text, vector in zip(texts, batch):
        (alone,) = vectors(embed(http, model=model, input=text))
        assert alone == pytest.approx(vector, abs=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_mean_pooling_matches_an_independent_mean_of_llama_cpp_token_states(
        http: httpx.Client, model: str, model_path: dict[str, Path]) -> None:
    """A model without a pooling type gets the mean of its last hidden layer over the input's
    tokens: computed here from llama-cpp-python's per-token embeddings (pooling NONE)."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

    texts = TEXTS[:2]
    got = vectors(embed(http, model=model, input=texts))
    reference = Llama(model_path=str(model_path[model]), embedding=True, n_ctx=N_CTX,
                      n_batch=N_CTX, n_ubatch=N_CTX, pooling_type=LLAMA_POOLING_TYPE_NONE,
                      verbose=False)
    try:
        for text, vector in zip(texts, got):
            states = np.array(reference.embed(text, normalize=False), dtype=np.float64)
            assert states.ndim == 2 and states.shape[0] == len(reference.tokenize(text.encode()))
            mean = states.mean(axis=0)
            assert vector == pytest.approx(list(mean / np.linalg.norm(mean)), abs=2e-4)
    finally:
        reference.close()


@pytest.mark.parametrize("model", MODELS[:2])
def test_an_input_longer_than_one_chunk_is_the_mean_over_all_its_tokens(
        http: httpx.Client, model: str, model_path: dict[str, Path]) -> None:
    """A causal model is decoded in 256-token ubatches (embed.CHUNK), the KV cache carrying the
    start: the mean over 600 to 900 tokens matches llama-cpp-python's states from one 1024-token
    ubatch."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

    from llamahomed.engine.worker.embed import CHUNK

    text = " ".join(f"item {i} is a {'red' if i % 3 else 'blue'} thing;" for i in range(70))
    (got,) = vectors(embed(http, model=model, input=text))
    reference = Llama(model_path=str(model_path[model]), embedding=True, n_ctx=N_CTX,
                      n_batch=N_CTX, n_ubatch=N_CTX, pooling_type=LLAMA_POOLING_TYPE_NONE,
                      verbose=False)
    try:
        states = np.array(reference.embed(text, normalize=False), dtype=np.float64)
    finally:
        reference.close()
    assert 2 * CHUNK < states.shape[0] < N_CTX
    mean = states.mean(axis=0)
    assert got == pytest.approx(list(mean / np.linalg.norm(mean)), abs=2e-4)


def test_a_model_that_declares_its_pooling_keeps_it(http: httpx.Client,
                                                      model_path: dict[str, Path]) -> None:
    """tiny-embed declares MEAN in its GGUF: the daemon's vectors are llama.cpp's own."""
    from llama_cpp import Llama

    got = vectors(embed(http, model=POOLED, input=TEXTS[:2]))
    reference = Llama(model_path=str(model_path[POOLED]), embedding=True, n_ctx=N_CTX,
                      verbose=False)
    try:
        want = reference.embed(TEXTS[:2], normalize=True)
    finally:
        reference.close()
    for vector, expected in zip(got, want):
        assert vector == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_token_arrays_embed_like_the_text_they_spell(http: httpx.Client, model: str) -> None:
    texts = TEXTS[:2]
    by_text = vectors(embed(http, model=model, input=texts))
    ids = [http.post("/tokenize", json={"model": model, "content": t, "add_special": True,
                                        "parse_special": False}).json()["tokens"] for t in texts]
    one = vectors(embed(http, model=model, input=ids[0]))          # a list of ints
    several = embed(http, model=model, input=ids)                  # a list of lists of ints
    mixed = vectors(embed(http, model=model, input=[texts[0], ids[1]]))  # llama-server mixes
    assert one[0] == pytest.approx(by_text[0], abs=1e-5)
    for got, want in zip(vectors(several), by_text):
        assert got == pytest.approx(want, abs=1e-5)
    assert mixed[1] == pytest.approx(by_text[1], abs=1e-5)
    assert several["usage"] == {"prompt_tokens": sum(map(len, ids)),
                                "total_tokens": sum(map(len, ids))}


@pytest.mark.parametrize("model", MODELS)
def test_base64_is_the_float_vector_as_little_endian_float32(http: httpx.Client,
                                                              model: str) -> None:
    (floats,) = vectors(embed(http, model=model, input=TEXTS[0]))
    for spelling in ("base64", "BASE64", "Base64"):
        (packed,) = vectors(embed(http, model=model, input=TEXTS[0], encoding_format=spelling))
        assert isinstance(packed, str)
        raw = base64.b64decode(packed)
        assert len(raw) == 4 * len(floats)
        assert list(struct.unpack(f"<{len(floats)}f", raw)) == pytest.approx(floats, abs=1e-6)
    (again,) = vectors(embed(http, model=model, input=TEXTS[0], encoding_format="FLOAT"))
    assert again == floats


@pytest.mark.parametrize("model", MODELS)
def test_the_official_sdk_embeds_with_floats_and_its_default_base64(
        sdk: openai.OpenAI, http: httpx.Client, model: str) -> None:
    (floats,) = vectors(embed(http, model=model, input=TEXTS[1]))
    default = sdk.embeddings.create(model=model, input=[TEXTS[1], TEXTS[0]])  # base64 on the wire
    explicit = sdk.embeddings.create(model=model, input=TEXTS[1], encoding_format="float")
    assert default.model == model and [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == pytest.approx(floats, abs=1e-6)
    assert explicit.data[0].embedding == pytest.approx(floats, abs=1e-9)
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
    tokens = sdk.embeddings.create(model=model, input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_usage_counts_every_inputs_tokens(http: httpx.Client) -> None:
    counts = [len(http.post("/tokenize", json={"model": TINY, "content": t, "add_special": True,
                                               "parse_special": False}).json()["tokens"])
              for t in TEXTS]
    reply = embed(http, model=TINY, input=TEXTS)
    assert reply["usage"] == {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}


def test_an_input_longer_than_the_context_is_refused_naming_the_limit(http: httpx.Client) -> None:
    error = refused(http, model=TINY, input=["short", "the cat " * 700])
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert str(N_CTX) in error["message"] and "input[1]" in error["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [[1, 2, 10**9]]}, "input"),              # not in the vocabulary
    ({"input": [1, -2]}, "input"),                      # negative id
    ({"input": [1, "two"]}, "input"),                   # ints and strings in one input
    ({"input": [[1, 2], [1.5]]}, "input"),              # a float is no token id
    ({"input": [[]]}, "input"),
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": {"text": "x"}}, "input"),
    ({"input": [True, False]}, "input"),                # booleans are no token ids
    ({"input": ["x"] * 257}, "input"),
    ({"input": "x", "dimensions": 8}, "dimensions"),
    ({"input": "x", "encoding_format": "binary"}, "encoding_format"),
])
def test_bad_inputs_are_a_400_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                               param: str) -> None:
    error = refused(http, model=TINY, **body)
    assert error["param"] == param and error["message"]


def test_a_missing_input_is_a_400_naming_input(http: httpx.Client) -> None:
    assert refused(http, model=TINY)["param"] == "input"
