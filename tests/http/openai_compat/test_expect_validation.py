"""What OpenAI's peers expect of request validation on ``/v1``: a bad body is a 400
``invalid_request_error`` naming the field in ``param`` (never FastAPI's 422), fields a server
does not know are ignored, an unknown model is a 404, a missing token a 401.

Peers: vLLM (tests/entrypoints/openai: test_chat_error, test_completion_error,
test_prompt_validation, test_non_object_body_validation, test_chat_logit_bias_validation), llama.cpp
(tools/server/tests/unit: test_chat_completion ``test_invalid_chat_completion_req``,
test_completion, test_security), Ollama (openai/openai_test.go error forwarding, docs/openai.md).
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.http.openai_compat.conftest import CHAT, TINY
from tests.http.openai_compat.wire import error, ok

CHAT_PATH, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


def chat(**body: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": HI, "max_tokens": 2, **body}


def completion(**body: Any) -> dict[str, Any]:
    return {"model": TINY, "prompt": "the cat", "max_tokens": 2, **body}


@pytest.mark.parametrize(("body", "param"), [
    ({"model": CHAT}, "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=[{"content": "hi"}]), "messages"),
    (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages"),
    (chat(messages=[{"role": "user", "content": 2}]), "messages"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:,"}}]}]), "messages"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(max_completion_tokens=0), "max_completion_tokens"),
    (chat(temperature=-0.5), "temperature"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(top_p=1.5), "top_p"),
    (chat(presence_penalty=2.5), "presence_penalty"),
    (chat(frequency_penalty=-3), "frequency_penalty"),
    (chat(n=0), "n"),
    (chat(stop=5), "stop"),
    (chat(response_format={"type": "xml"}), "response_format"),
    (chat(response_format={"type": "json_schema"}), "response_format"),
    (chat(stream_options={"include_usage": "sometimes"}), "stream_options"),
])
def test_a_bad_chat_body_is_a_400_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                                   param: str) -> None:
    """vLLM test_chat_error / llama.cpp test_invalid_chat_completion_req: 400, never 422, with
    OpenAI's ``param`` (Ollama forwards 'invalid message content type' the same way)."""
    found = error(http, CHAT_PATH, body)
    assert found["param"] is not None and found["param"].split(".")[0] == param


@pytest.mark.parametrize(("body", "param"), [
    ({"model": TINY}, "prompt"),
    (completion(prompt=""), "prompt"),
    (completion(prompt=[]), "prompt"),
    (completion(prompt=["ok", ""]), "prompt"),
    (completion(prompt={"text": "x"}), "prompt"),
    (completion(max_tokens=0), "max_tokens"),
    (completion(temperature=3), "temperature"),
    (completion(top_p=0), "top_p"),
    (completion(best_of=3), "best_of"),
    (completion(suffix="tail"), "suffix"),
    (completion(presence_penalty="x"), "presence_penalty"),
    (completion(seed="abc"), "seed"),
])
def test_a_bad_completion_body_is_a_400_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                                         param: str) -> None:
    """vLLM test_completion_error / test_prompt_validation (an empty prompt is refused)."""
    found = error(http, COMPLETIONS, body)
    assert found["param"] is not None and found["param"].split(".")[0] == param


@pytest.mark.parametrize("path", [CHAT_PATH, COMPLETIONS, "/v1/embeddings"])
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"a string"', b"null", b""])
def test_a_body_that_is_not_a_json_object_is_a_400(http: httpx.Client, path: str,
                                                    raw: bytes) -> None:
    """vLLM test_non_object_body_validation: a non-object body is a client error, not a 500."""
    response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("path", "body"), [
    (CHAT_PATH, chat(store=False, metadata={"k": "v"}, service_tier="auto", modalities=["text"],
                     prediction=None, reasoning_effort="low", bogus_field=1)),
    (CHAT_PATH, chat(messages=[{"role": "user", "content": "hi", "refusal": None, "extra": 1}])),
    (COMPLETIONS, completion(store=False, bogus_field={"deep": [1]})),
    ("/v1/embeddings", {"model": TINY, "input": "hi", "bogus_field": True}),
])
def test_fields_a_server_does_not_know_are_ignored(http: httpx.Client, path: str,
                                                    body: dict[str, Any]) -> None:
    """vLLM and llama-server accept OpenAI's newer fields they do not implement; so does
    Ollama's middleware (it maps the fields it knows and drops the rest)."""
    ok(http, path, body)


@pytest.mark.parametrize(("path", "body"), [
    (CHAT_PATH, chat(user="someone")),
    (CHAT_PATH, chat(messages=[{"role": "developer", "content": "be brief"},
                               {"role": "user", "content": "hi", "name": "ann"}])),
    (CHAT_PATH, chat(messages=[{"role": "system", "content": [{"type": "text", "text": "sys"}]},
                               *HI])),
    (CHAT_PATH, chat(messages=[*HI, {"role": "assistant", "content": None}, *HI])),
    (CHAT_PATH, chat(stop=None, seed=None, temperature=None, top_p=None)),
    (CHAT_PATH, chat(stream=False, stream_options=None)),
    (COMPLETIONS, completion(user="someone", echo=False, best_of=1, n=1)),
    (COMPLETIONS, completion(stop=["\n", "###"], logit_bias={})),
])
def test_valid_optional_fields_are_accepted(http: httpx.Client, path: str,
                                             body: dict[str, Any]) -> None:
    """OpenAI's documented optional fields, nulls included (the SDKs send explicit nulls)."""
    data = ok(http, path, body)
    assert data["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(("path", "body"), [
    (CHAT_PATH, {"model": "no-such-model", "messages": HI}),
    (COMPLETIONS, {"model": "no-such-model", "prompt": "x"}),
    ("/v1/embeddings", {"model": "no-such-model", "input": "x"}),
    ("/v1/responses/input_tokens", {"model": "no-such-model", "input": "x"}),
])
def test_an_unknown_model_is_a_404_model_not_found(http: httpx.Client, path: str,
                                                    body: dict[str, Any]) -> None:
    """OpenAI answers 404 ``model_not_found``; vLLM and llama-server's router mode likewise."""
    assert error(http, path, body, status=404)["code"] == "model_not_found"


def test_an_unknown_model_reaches_the_sdk_as_not_found(sdk: openai.OpenAI) -> None:
    """The SDK maps the 404 to ``NotFoundError`` (vLLM test_serving_models: 'model does not
    exist')."""
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="no-such-model", messages=HI)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


@pytest.mark.parametrize("path", ["/v1/models", CHAT_PATH, COMPLETIONS, "/v1/embeddings"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_missing_or_wrong_key_is_a_401(daemon: Any, path: str, token: str | None) -> None:
    """llama.cpp test_security (--api-key): 401 ``authentication_error`` without a valid key."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    method = "GET" if path == "/v1/models" else "POST"
    response = httpx.request(method, f"{daemon.url}{path}", headers=headers,
                             json=None if method == "GET" else chat())
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_the_sdk_raises_authentication_error_for_a_wrong_key(daemon: Any) -> None:
    """llama.cpp test_security: the OpenAI library sees its own AuthenticationError."""
    wrong = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    wrong.close()


def test_an_unknown_v1_path_is_a_404_and_a_wrong_method_a_405(http: httpx.Client) -> None:
    """Routes answer in OpenAI's error shape even when no handler runs."""
    assert error(http, "/v1/no-such-route", {}, status=404)["type"] == "not_found_error"
    error(http, COMPLETIONS, None, status=405, method="GET")


@pytest.mark.parametrize(("path", "body"), [
    (CHAT_PATH, chat(messages=[{"role": "user", "content": "the cat " * 700}])),
    (COMPLETIONS, completion(prompt="the cat " * 700)),
])
def test_a_prompt_longer_than_the_context_is_a_400(http: httpx.Client, path: str,
                                                   body: dict[str, Any]) -> None:
    """llama.cpp test_context_size_exceeded and vLLM's 'maximum context length' 400: refused,
    never truncated, with code ``context_length_exceeded`` (OpenAI's)."""
    assert error(http, path, body)["code"] == "context_length_exceeded"


def test_a_model_without_chat_template_refuses_chat_with_a_400(sdk: openai.OpenAI) -> None:
    """vLLM refuses chat for a model with no chat template (400, 'chat template'); Ollama and
    llama-server fall back to a default template, which guesses a format the model never saw."""
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=TINY, messages=HI)  # type: ignore[arg-type]
    assert "chat template" in info.value.message


@pytest.mark.parametrize("bias", [{"99999999": 5}, {"-1": 1}, {"hello": 1}])
def test_logit_bias_for_a_token_outside_the_vocabulary_is_a_400(http: httpx.Client,
                                                                bias: dict[str, int]) -> None:
    """vLLM test_chat_logit_bias_validation: a token id the vocabulary lacks is refused."""
    assert error(http, CHAT_PATH, chat(logit_bias=bias))["param"].startswith("logit_bias")


def test_stream_options_without_stream_is_a_400(http: httpx.Client) -> None:
    """vLLM test_chat_completion_stream_options: ``stream_options`` only with ``stream=true``."""
    error(http, CHAT_PATH, chat(stream_options={"include_usage": True}))
