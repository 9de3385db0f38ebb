"""``POST /v1/responses/input_tokens``: OpenAI's input-token count, on the real daemon: messages
through the model's chat template, counted exactly as the generation's ``prompt_tokens``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.http.openai_compat.conftest import CHAT, GEMMA, SMOL, TINY

CHAT_MODELS = [pytest.param(CHAT, id="tiny-chat"),
               pytest.param(SMOL, id="smollm2", marks=pytest.mark.smollm2)]


def count(http: httpx.Client, **body: Any) -> int:
    response = http.post("/v1/responses/input_tokens", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "response.input_tokens"
    assert isinstance(data["input_tokens"], int)
    return int(data["input_tokens"])


def chat_prompt_tokens(sdk: openai.OpenAI, model: str, messages: list[dict[str, str]]) -> int:
    reply = sdk.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                        max_tokens=1, temperature=0)
    assert reply.usage is not None
    return reply.usage.prompt_tokens


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_a_string_counts_as_one_user_message(http: httpx.Client, sdk: openai.OpenAI,
                                             model: str) -> None:
    text = "How many tokens is this sentence?"
    assert count(http, model=model, input=text) == chat_prompt_tokens(
        sdk, model, [{"role": "user", "content": text}])


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_messages_and_instructions_go_through_the_chat_template(
        http: httpx.Client, sdk: openai.OpenAI, model: str) -> None:
    items = [{"role": "user", "content": "hello"},
             {"type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "hi, how can I help?"}]},
             {"role": "user", "content": [{"type": "input_text", "text": "count "},
                                          {"type": "input_text", "text": "me"}]}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi, how can I help?"},
                {"role": "user", "content": "count me"}]
    got = count(http, model=model, input=items, instructions="Be brief.")
    assert got == chat_prompt_tokens(sdk, model, messages)
    assert count(http, model=model, input=items) == chat_prompt_tokens(sdk, model, messages[1:])


@pytest.mark.parametrize("model", [TINY, pytest.param(GEMMA, marks=pytest.mark.gemma)])
def test_a_string_on_a_base_model_counts_its_native_prompt(http: httpx.Client,
                                                           model: str) -> None:
    """No chat template: the text (after the instructions and a blank line) as the native API
    prompts a base model."""
    response = http.post("/api/v1/process", json={
        "model": model, "prompt": "the cat sat", "system": "be short", "max_tokens": 1})
    assert response.status_code == 200, response.text
    want = response.json()["usage"]["prompt_tokens"]
    assert count(http, model=model, input="the cat sat", instructions="be short") == want


def test_the_official_sdk_counts_input_tokens(sdk: openai.OpenAI, http: httpx.Client) -> None:
    resource = getattr(sdk.responses, "input_tokens", None)
    if resource is None:
        pytest.skip(f"openai {openai.__version__} has no responses.input_tokens")
    reply = resource.count(model=CHAT, input="hello there")
    assert reply.input_tokens == count(http, model=CHAT, input="hello there")


@pytest.mark.parametrize(("body", "param", "status"), [
    ({"model": TINY, "input": [{"role": "user", "content": "hi"}]}, "input", 400),  # no template
    ({"model": CHAT, "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input", 400),
    ({"model": CHAT, "input": [{"role": "user",
                                "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input", 400),
    ({"model": CHAT, "input": [{"role": "robot", "content": "hi"}]}, "input", 400),
    ({"model": CHAT, "input": []}, "input", 400),
    ({"model": CHAT}, "input", 400),
    ({"model": CHAT, "input": 12}, "input", 400),
    ({"model": CHAT, "input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools", 400),
    ({"model": "no-such-model", "input": "hi"}, None, 404),
])
def test_bad_requests_are_refused_in_openais_shape(http: httpx.Client, body: dict[str, Any],
                                                   param: str | None, status: int) -> None:
    response = http.post("/v1/responses/input_tokens", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_the_route_needs_a_token(daemon: Any) -> None:
    response = httpx.post(f"{daemon.url}/v1/responses/input_tokens",
                          json={"model": CHAT, "input": "hi"})
    assert response.status_code == 401
