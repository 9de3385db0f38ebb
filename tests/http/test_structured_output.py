"""Structured output, penalties and logit bias through the real app (real workers, tiny models):
the native API's ``format`` / ``grammar`` and OpenAI's ``response_format`` via the ``openai`` SDK.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pydantic
import pytest

from tests.conftest import TINY_MODEL_ID
from tests.engine.worker.test_structured import SCHEMAS
from tests.fixtures.http import post

SAMPLE = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": 300}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                           "age": {"type": "integer"},
                                           "pet": {"enum": ["cat", "dog"]}},
          "required": ["name", "age", "pet"], "additionalProperties": False}


class Pet(pydantic.BaseModel):
    kind: str = pydantic.Field(max_length=6)
    legs: int
    friendly: bool


# -- the native API -----------------------------------------------------------------------------
async def test_native_format_schema_output_validates(api: Any, auth: dict[str, str]) -> None:
    for seed, schema in enumerate(SCHEMAS):
        data = await post(api, auth, "/api/v1/process",
                          {"prompt": "JSON please:", "format": schema, "seed": seed, **SAMPLE})
        assert data["finish_reason"] == "stop", data
        jsonschema.validate(json.loads(data["text"]), schema)


async def test_native_grammar_stream_batch_and_websocket(api: Any, auth: dict[str, str]) -> None:
    grammar = 'root ::= ("yes" | "no") "!"'
    data = await post(api, auth, "/api/v1/process", {"prompt": "ok?", "grammar": grammar, **SAMPLE})
    assert data["text"] in ("yes!", "no!") and data["finish_reason"] == "stop"
    response = await api.post("/api/v1/stream", headers=auth,
                              json={"prompt": "ok?", "format": PERSON, **SAMPLE})
    lines = [json.loads(line) for line in (await response.text()).splitlines() if line]
    jsonschema.validate(json.loads("".join(line.get("chunk", "") for line in lines)), PERSON)
    batch = await post(api, auth, "/api/v1/batch",
                       {"prompts": ["a", "b"], "format": PERSON, **SAMPLE})
    for result in batch["results"]:
        jsonschema.validate(json.loads(result["text"]), PERSON)
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": "w", "prompt": "ok?", "grammar": grammar, **SAMPLE})
        text = ""
        while True:
            message = await ws.receive_json()
            text += message.get("chunk", "")
            if message.get("done") or "error" in message:
                break
    assert text in ("yes!", "no!")


async def test_native_json_with_too_few_tokens_ends_with_length(
        api: Any, auth: dict[str, str]) -> None:
    data = await post(api, auth, "/api/v1/process",
                      {"prompt": "JSON:", "format": "json", "temperature": 0, "max_tokens": 4})
    assert data["finish_reason"] == "length" and data["text"].startswith("{")


@pytest.mark.parametrize(("body", "field"), [
    ({"grammar": "root ::= undefined"}, "grammar"),
    ({"grammar": 'other ::= "x"'}, "grammar"),
    ({"format": {"type": "no-such-type"}}, "format"),
    ({"format": "yaml"}, "format"),
    ({"format": "json", "grammar": 'root ::= "x"'}, "body"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"seed": 2**32}, "seed"),
])
async def test_native_bad_constraints_are_refused_naming_the_field(
        api: Any, auth: dict[str, str], body: dict[str, Any], field: str) -> None:
    data = await post(api, auth, "/api/v1/process", {"prompt": "x", **body}, status=422)
    assert data["error"]["code"] == "validation_error"
    assert data["error"]["details"]["errors"][0]["field"] == field


async def test_worker_refusals_are_invalid_request(api: Any, auth: dict[str, str]) -> None:
    """What only the model can judge: token ids outside its vocabulary."""
    for body in ({"logit_bias": {"99999": 5}}, {"grammar": "root ::= <[99999]>"}):
        data = await post(api, auth, "/api/v1/process", {"prompt": "x", **body}, status=400)
        assert data["error"]["code"] == "invalid_request", data
    ok = await post(api, auth, "/api/v1/process", {"prompt": "x", "max_tokens": 2})
    assert ok["usage"]["completion_tokens"] == 2  # the worker is still there


async def test_native_logit_bias_and_penalties(api: Any, auth: dict[str, str]) -> None:
    base = {"prompt": "Hello", "temperature": 0, "max_tokens": 12, "repeat_penalty": 1.0}
    plain = (await post(api, auth, "/api/v1/process", base))["text"]
    penalised = await post(api, auth, "/api/v1/process", {**base, "frequency_penalty": 2.0,
                                                          "presence_penalty": 2.0})
    assert penalised["text"] != plain
    forced = await post(api, auth, "/api/v1/process", {**base, "logit_bias": {"5": 100}})
    assert len(set(forced["text"])) == 1  # token 5 (one byte token) every step


# -- OpenAI's routes and the SDK --------------------------------------------------------------
async def test_sdk_chat_response_format_json_schema(client: openai.AsyncOpenAI,
                                                    chat_model: str) -> None:
    reply = await client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "a person"}], seed=3,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=1.0, top_p=1.0, max_tokens=300)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON)


async def test_sdk_parse_with_a_pydantic_model(client: openai.AsyncOpenAI, chat_model: str) -> None:
    completion = await client.chat.completions.parse(
        model=chat_model, messages=[{"role": "user", "content": "a pet"}], response_format=Pet,
        temperature=1.0, top_p=1.0, max_tokens=300, seed=4)
    pet = completion.choices[0].message.parsed
    assert isinstance(pet, Pet) and len(pet.kind) <= 6


async def test_sdk_json_object_and_llama_server_extras(client: openai.AsyncOpenAI,
                                                       chat_model: str) -> None:
    reply = await client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=5)
    content = reply.choices[0].message.content or ""
    assert content.startswith("{") and reply.choices[0].finish_reason in ("length", "stop")
    completion = await client.completions.create(
        model=TINY_MODEL_ID, prompt="JSON:", max_tokens=300, temperature=1.0, top_p=1.0, seed=5,
        extra_body={"json_schema": PERSON, "top_k": 0, "min_p": 0.0})
    jsonschema.validate(json.loads(completion.choices[0].text), PERSON)
    grammar = await client.completions.create(
        model=TINY_MODEL_ID, prompt="?", max_tokens=10, extra_body={"grammar": 'root ::= "ok"'})
    assert grammar.choices[0].text == "ok"
    streamed = await client.completions.create(
        model=TINY_MODEL_ID, prompt="JSON:", max_tokens=300, temperature=1.0, top_p=1.0, seed=6,
        stream=True, extra_body={"json_schema": PERSON, "top_k": 0, "min_p": 0.0})
    text = "".join([chunk.choices[0].text async for chunk in streamed if chunk.choices])
    jsonschema.validate(json.loads(text), PERSON)


async def test_sdk_penalties_logit_bias_and_seed(client: openai.AsyncOpenAI) -> None:
    base: dict[str, Any] = {"model": TINY_MODEL_ID, "prompt": "Hello", "temperature": 0,
                            "max_tokens": 12}
    plain = (await client.completions.create(**base)).choices[0].text
    penalised = await client.completions.create(**base, presence_penalty=2.0,
                                                frequency_penalty=2.0)
    assert penalised.choices[0].text != plain
    banned = await client.completions.create(**base, logit_bias={"5": -100})
    assert banned.choices[0].text
    for bad in ({"seed": -1}, {"seed": 2**32}, {"logit_bias": {"5": 500}},
                {"presence_penalty": 2.5}):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.completions.create(**base, **bad)
        assert refused.value.param == next(iter(bad)) and refused.value.status_code == 400


@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
     "response_format"),
    ({"json_schema": {"type": "bogus"}}, "json_schema"),
    ({"grammar": "root ::= nope"}, "grammar"),
    ({"response_format": {"type": "json_object"}, "grammar": 'root ::= "x"'}, "grammar"),
])
async def test_bad_structured_output_requests_are_400_with_param(
        api: Any, auth: dict[str, str], extra: dict[str, Any], param: str) -> None:
    for path, body in (("/v1/completions", {"prompt": "x"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        response = await api.post(path, headers=auth, json={**body, **extra})
        error = (await response.json())["error"]
        assert response.status == 400, error
        assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.gemma
async def test_gemma_fills_a_schema_through_the_sdk(gemma_sdk: openai.AsyncOpenAI) -> None:
    """Real text: the base Gemma answers a JSON Schema completion with sensible values."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                               "country": {"type": "string", "maxLength": 40}},
              "required": ["city", "country"], "additionalProperties": False}
    reply = await gemma_sdk.completions.create(
        model="gemma3-270m", prompt="The Eiffel Tower, as JSON:", max_tokens=80,
        temperature=0, extra_body={"response_format": {  # the SDK types it for chat only
            "type": "json_schema", "json_schema": {"name": "place", "schema": schema}}})
    assert reply.choices[0].finish_reason == "stop"
    place = json.loads(reply.choices[0].text)
    jsonschema.validate(place, schema)
    assert place["city"] == "Paris"
