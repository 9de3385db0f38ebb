"""Tool calls on /v1/chat/completions, through the real engine and the official ``openai`` SDK.

SmolLM2 135M (whose ChatML template has no tool support: the generic tools prompt) must return
calls whose arguments validate against the function's schema when the choice is ``required``
or a named function (a grammar enforces it); streamed calls are reassembled by the SDK; calls
and results in the history are rendered and answered. The tiny random model with a Hermes-style
template that has tool support of its own covers the template's ``tools`` path. Bad tool fields
are 400s naming the field in ``param``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from llamahomed.http.app import create_app
from llamahomed.registry.default_model import SMOLLM2_FILE
from tests.fixtures.http import post
from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.service.test_tools_render import HERMES_TEMPLATE

CALL = {"temperature": 0, "max_tokens": 48}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 30},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}
ORDER = {"type": "object", "properties": {
    "item": {"type": "object", "properties": {"sku": {"type": "string", "maxLength": 12},
                                              "count": {"type": "integer"}},
             "required": ["sku", "count"]}}, "required": ["item"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"]}
SCHEMAS = {"get_weather": WEATHER, "place_order": ORDER, "add": ADD}


def tool(name: str, description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": SCHEMAS[name]}}


TOOLS = [tool("get_weather", "Current weather in a city"), tool("place_order", "Order an item"),
         tool("add", "Add two integers")]


def check_calls(message: Any, names: set[str]) -> list[dict[str, Any]]:
    """The message's calls, each named from ``names`` and valid against its schema."""
    assert message.tool_calls, message
    arguments = []
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        value = json.loads(call.function.arguments)
        jsonschema.validate(value, SCHEMAS[call.function.name])
        arguments.append(value)
    return arguments


@pytest.fixture
def tools_settings(make_settings: Any, models_dir: Path, smollm2_file: Path) -> Any:
    os.link(smollm2_file, models_dir / SMOLLM2_FILE)
    write_tiny_llama(models_dir / "tiny-hermes.gguf", name="tiny-hermes",
                     chat_template=HERMES_TEMPLATE, n_ctx=2048)
    return make_settings(system_settings={"n_ctx": 2048})


@pytest.fixture
async def tools_api(aiohttp_client: Any, tools_settings: Any) -> Any:
    return await aiohttp_client(create_app(tools_settings))


@pytest.fixture
def headers(tools_api: Any, tools_settings: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {tools_settings.admin_token_file.read_text().strip()}"}


@pytest.fixture
async def sdk(tools_api: Any, headers: dict[str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=str(tools_api.make_url("/v1")),
                                api_key=headers["Authorization"].removeprefix("Bearer "),
                                max_retries=0)
    yield client
    await client.close()


class Weather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


@pytest.mark.smollm2
async def test_required_gives_one_call_the_sdk_parses_into_its_typed_arguments(
        sdk: openai.AsyncOpenAI) -> None:
    # pydantic_function_tool: a strict tool; parse() turns the arguments into a Weather
    reply = await sdk.chat.completions.parse(
        model="smollm2", messages=ASK, tools=[openai.pydantic_function_tool(Weather)],
        tool_choice="required", parallel_tool_calls=False, **CALL)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "Weather"
    assert isinstance(call.function.parsed_arguments, Weather)
    jsonschema.validate(json.loads(call.function.arguments), Weather.model_json_schema())


@pytest.mark.smollm2
@pytest.mark.parametrize(("name", "parallel"), [("place_order", False), ("add", True)])
async def test_a_named_function_is_the_one_called_with_valid_arguments(
        sdk: openai.AsyncOpenAI, name: str, parallel: bool) -> None:
    reply = await sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Order 3 apples, and add 2 and 5."}],
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": name}},
        parallel_tool_calls=parallel, temperature=0, max_tokens=64)
    (choice,) = reply.choices
    # parallel calls may repeat until max_tokens: the whole calls come back, cut short
    assert choice.finish_reason == "tool_calls" or (parallel and choice.finish_reason == "length")
    arguments = check_calls(choice.message, {name})
    assert 1 <= len(arguments) <= (8 if parallel else 1)


@pytest.mark.smollm2
async def test_a_streamed_call_reassembled_by_the_sdk_equals_the_whole_answer(
        sdk: openai.AsyncOpenAI) -> None:
    body: dict[str, Any] = {"model": "smollm2", "messages": ASK, "tools": TOOLS[:1],
                            "tool_choice": "required", "parallel_tool_calls": False, **CALL}
    whole = (await sdk.chat.completions.create(**body)).choices[0]
    done = []
    async with sdk.chat.completions.stream(**body) as stream:
        async for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done.append((event.name, event.arguments))
        final = await stream.get_final_completion()
    (choice,) = final.choices
    assert choice.finish_reason == whole.finish_reason == "tool_calls"
    assert choice.message.content is None and whole.message.content is None
    shape = [(c.type, c.function.name, json.loads(c.function.arguments))
             for c in choice.message.tool_calls or []]
    assert shape == [(c.type, c.function.name, json.loads(c.function.arguments))
                     for c in whole.message.tool_calls or []]
    assert done == [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    check_calls(choice.message, {"get_weather"})


@pytest.mark.smollm2
async def test_none_answers_with_text_and_auto_with_whatever_parses(
        sdk: openai.AsyncOpenAI) -> None:
    none = await sdk.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS,
                                             tool_choice="none", temperature=0, max_tokens=12)
    (choice,) = none.choices
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    auto = (await sdk.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS,
                                              temperature=0, max_tokens=40)).choices[0]
    if auto.message.tool_calls:
        check_calls(auto.message, set(SCHEMAS))
        assert auto.finish_reason in ("tool_calls", "length")
    else:
        assert auto.message.content and auto.finish_reason in ("stop", "length")


@pytest.mark.smollm2
async def test_calls_and_results_in_the_history_are_answered(
        sdk: openai.AsyncOpenAI, tools_api: Any, headers: dict[str, str]) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    result = '{"temperature": 21, "sky": "sunny"}'
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": result}]
    reply = await sdk.chat.completions.create(model="smollm2", messages=history, tools=TOOLS,
                                              tool_choice="none", temperature=0, max_tokens=24)
    (choice,) = reply.choices
    assert choice.message.content and choice.message.tool_calls is None
    # SmolLM2's template has no tool support: the call as Hermes text, the result a user turn
    # (tool_choice none: the tools themselves are not shown)
    by_hand = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
               "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
               '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
               f"{arguments}}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n"
               f"{result}\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    counted = await post(tools_api, headers, "/tokenize",
                         {"content": by_hand, "model": "smollm2", "add_special": True})
    assert reply.usage is not None and reply.usage.prompt_tokens == len(counted["tokens"])
    # without tools in the request the history is rendered the same way
    again = await sdk.chat.completions.create(model="smollm2", messages=history, temperature=0,
                                              max_tokens=1)
    assert again.usage is not None and again.usage.prompt_tokens == reply.usage.prompt_tokens


async def test_a_template_with_tool_support_renders_the_tools_and_the_grammar_forces_a_call(
        tools_api: Any, headers: dict[str, str]) -> None:
    """The tiny random model writes gibberish; the grammar still makes its answer a valid call."""
    body = {"model": "tiny-hermes", "messages": ASK, "tools": [tool("add")],
            "tool_choice": "required", "max_tokens": 80, "temperature": 0,
            "parallel_tool_calls": False}
    reply = await post(tools_api, headers, "/v1/chat/completions", body)
    (choice,) = reply["choices"]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "add"
    jsonschema.validate(json.loads(call["function"]["arguments"]), ADD)
    assert choice["message"]["content"] is None
    bare = await post(tools_api, headers, "/v1/chat/completions",
                      {**body, "tools": None, "tool_choice": None, "max_tokens": 1})
    # the template's own tools section is in the prompt only when tools are sent
    assert reply["usage"]["prompt_tokens"] > bare["usage"]["prompt_tokens"] + 20


@pytest.mark.parametrize(("change", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [tool("add"), {"type": "function", "function": {
        "name": "x", "parameters": {"type": "array"}}}]}, "tools[1].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": "nope"}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {
        "type": "object", "properties": {"y": {"$ref": "#/missing"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [tool("add"), tool("add")]}, "tools[1].function.name"),
    ({"tools": [tool("add")], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [tool("add")], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "add"}}}, "tool_choice"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{not json"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "[1, 2]"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [*ASK, {"role": "tool", "content": "21 degrees"}]}, "messages[1].tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"function": {"name": "add", "arguments": "{}"}}]}]}, "messages[0].tool_calls"),
    ({"tools": [tool("add")], "tool_choice": "required",
      "response_format": {"type": "json_object"}}, "tool_choice"),
])
async def test_bad_tool_fields_are_400s_naming_the_field(
        tools_api: Any, headers: dict[str, str], change: dict[str, Any], param: str) -> None:
    body = {"model": "tiny-hermes", "messages": ASK, "max_tokens": 1, **change}
    data = await post(tools_api, headers, "/v1/chat/completions", body, 400)
    assert data["error"]["param"] == param, data
    assert data["error"]["type"] == "invalid_request_error"


async def test_streamed_calls_have_openais_delta_shape(tools_api: Any, headers: dict[str, str]) -> None:
    """On the wire: the role first, each call as an id/type/name delta then its arguments,
    the finish reason, the usage chunk, [DONE] (the tiny model, forced by the grammar)."""
    response = await tools_api.post("/v1/chat/completions", headers=headers, json={
        "model": "tiny-hermes", "messages": ASK, "tools": [tool("add")], "tool_choice": "required",
        "parallel_tool_calls": False, "max_tokens": 80, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})
    assert response.status == 200
    events = [line.removeprefix("data: ") for line in (await response.text()).split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert len(calls) == 2 and all(c["index"] == 0 for c in calls)
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "add", "arguments": ""}
    assert set(calls[1]) == {"index", "function"} and set(calls[1]["function"]) == {"arguments"}
    jsonschema.validate(json.loads(calls[1]["function"]["arguments"]), ADD)
    assert not any(d.get("content") for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
