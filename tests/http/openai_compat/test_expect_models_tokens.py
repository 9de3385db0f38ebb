"""What OpenAI's peers expect of ``/v1/models``, llama-server's ``/tokenize`` and
``/detokenize``, and the shape of ``/v1/embeddings`` answers.

Peers: vLLM (tests/entrypoints/openai: test_basic show_available_models, embedding_tests),
llama.cpp (tools/server/tests/unit: test_basic, test_tokenize, test_embedding), Ollama
(docs/openai.md: /v1/models, /v1/embeddings input forms).
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.http.openai_compat.conftest import CHAT, GEMMA, POOLED, SMOL, TINY
from tests.http.openai_compat.wire import error, ok

ALL = [TINY, CHAT, POOLED, GEMMA, SMOL]


# -- models -------------------------------------------------------------------------------------

def test_the_model_list_has_openais_shape(http: httpx.Client) -> None:
    """vLLM test_show_available_models / Ollama /v1/models: ``{"object": "list", "data":
    [{"id", "object": "model", "created", "owned_by"}]}``."""
    response = http.get("/v1/models")
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "list"
    assert sorted(m["id"] for m in data["data"]) == sorted(ALL)
    for model in data["data"]:
        assert set(model) >= {"id", "object", "created", "owned_by"}
        assert model["object"] == "model" and isinstance(model["created"], int)


@pytest.mark.parametrize("model", ALL)
def test_each_listed_model_can_be_retrieved(sdk: openai.OpenAI, model: str) -> None:
    """Ollama /v1/models/{model}: one model object by id."""
    found = sdk.models.retrieve(model)
    assert found.id == model and found.object == "model"


def test_the_sdk_lists_models(sdk: openai.OpenAI) -> None:
    """llama.cpp test_basic (the OpenAI library's models.list)."""
    assert sorted(m.id for m in sdk.models.list()) == sorted(ALL)


def test_an_unknown_model_id_is_a_404(http: httpx.Client) -> None:
    response = http.get("/v1/models/no-such-model")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


# -- tokenize / detokenize (llama-server's routes) ----------------------------------------------

@pytest.mark.parametrize("model", [TINY, pytest.param(GEMMA, marks=pytest.mark.gemma),
                                   pytest.param(SMOL, marks=pytest.mark.smollm2)])
@pytest.mark.parametrize("text", ["What is the capital of France ?", "naïve café 日本語 🙂", " a  b "])
def test_tokenize_then_detokenize_round_trips(http: httpx.Client, model: str, text: str) -> None:
    """llama.cpp test_tokenize_detokenize: detokenize(tokenize(text)) is the text."""
    tokens = ok(http, "/tokenize", {"model": model, "content": text})["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert ok(http, "/detokenize", {"model": model, "tokens": tokens})["content"] == text


def test_tokenize_with_pieces_spells_each_token(http: httpx.Client) -> None:
    """llama.cpp test_tokenize_with_pieces: ``{id, piece}`` objects whose pieces join to the
    text (byte lists where a piece is not whole UTF-8)."""
    text = "hello world"
    pieces = ok(http, "/tokenize", {"model": GEMMA, "content": text,
                                    "with_pieces": True})["tokens"]
    assert all(set(p) == {"id", "piece"} for p in pieces)
    assert "".join(p["piece"] for p in pieces if isinstance(p["piece"], str)) == text


def test_add_special_adds_the_bos_token(http: httpx.Client) -> None:
    """llama.cpp test_tokenize (add_special): BOS first, one token more."""
    plain = ok(http, "/tokenize", {"model": GEMMA, "content": "hello"})["tokens"]
    special = ok(http, "/tokenize", {"model": GEMMA, "content": "hello",
                                     "add_special": True})["tokens"]
    assert special[1:] == plain and len(special) == len(plain) + 1


@pytest.mark.parametrize(("body", "status"), [
    ({"model": TINY, "tokens": [10**8]}, 400),
    ({"model": TINY, "tokens": [-1]}, 400),
    ({"model": TINY, "tokens": ["a"]}, 400),
    ({"model": TINY}, 400),
])
def test_detokenize_refuses_ids_outside_the_vocabulary(http: httpx.Client, body: dict[str, Any],
                                                      status: int) -> None:
    """llama-server checks token ids against the vocabulary before detokenizing."""
    response = http.post("/detokenize", json=body)
    assert response.status_code in (status, 422), response.text


# -- embeddings answer shapes -------------------------------------------------------------------

@pytest.mark.parametrize(("given", "count"), [
    ("string", 1),
    (["string1", "string2"], 2),
    ([12, 34, 56], 1),
    ([[12, 34, 56], [12, 34, 56]], 2),
    (["string1", [12, 34, 56]], 2),
])
def test_every_openai_input_form_embeds(http: httpx.Client, given: Any, count: int) -> None:
    """llama.cpp test_embedding_mixed_input and OpenAI: a string, strings, token ids, lists of
    token ids (and, as llama-server allows, strings mixed with token lists)."""
    data = ok(http, "/v1/embeddings", {"model": TINY, "input": given})
    assert data["object"] == "list" and len(data["data"]) == count
    assert all(len(d["embedding"]) > 1 for d in data["data"])


@pytest.mark.parametrize("given", [[], {"content": "string"}, [12, "string", 34], [[]], ""])
def test_an_invalid_embedding_input_is_a_400(http: httpx.Client, given: Any) -> None:
    """llama.cpp test_embedding_invalid_input: [] and object inputs are refused (400), as is an
    empty string (OpenAI's rule)."""
    assert error(http, "/v1/embeddings", {"model": TINY, "input": given})["param"] == "input"


def test_the_same_prompt_gives_the_same_embedding(http: httpx.Client) -> None:
    """llama.cpp test_same_prompt_give_same_result."""
    data = ok(http, "/v1/embeddings", {"model": GEMMA, "input": ["I believe the meaning"] * 4})
    first = data["data"][0]["embedding"]
    assert all(d["embedding"] == first for d in data["data"])


@pytest.mark.parametrize("n", [1, 2])
def test_embedding_usage_is_prompt_tokens_only(http: httpx.Client, n: int) -> None:
    """llama.cpp test_embedding_usage_single / _multiple: prompt_tokens == total_tokens, n
    times one input's count."""
    one = ok(http, "/v1/embeddings", {"model": TINY, "input": "This is a test"})["usage"]
    data = ok(http, "/v1/embeddings", {"model": TINY, "input": ["This is a test"] * n})
    assert data["usage"] == {"prompt_tokens": n * one["prompt_tokens"],
                             "total_tokens": n * one["prompt_tokens"]}


def test_an_embedding_input_longer_than_the_context_is_a_400(http: httpx.Client) -> None:
    """llama.cpp test_embedding_error_prompt_too_long, OpenAI's 'maximum context length'."""
    found = error(http, "/v1/embeddings", {"model": GEMMA, "input": "This is a test " * 400})
    assert found["code"] == "context_length_exceeded"


def test_dimensions_is_refused_clearly(sdk: openai.OpenAI) -> None:
    """vLLM test_embedding_dimensions refuses ``dimensions`` for a model that cannot shorten its
    vectors (400)."""
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model=TINY, input="hi", dimensions=8)
    assert info.value.param == "dimensions"
