"""Anthropic tool use through the official ``anthropic`` SDK against the real app and SmolLM2:
a forced ``tool`` choice gives a ``tool_use`` block whose input validates against the tool's
``input_schema``, the stream reassembles to the same, a tool_result round trip gets an answer,
count_tokens counts the tools, and bad definitions are Anthropic-shaped 400s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest

from llamahomed.registry.default_model import SMOLLM2_ID
from tests.http.test_anthropic import ZERO, daemon

__all__ = ["daemon"]
pytestmark = pytest.mark.smollm2

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
          "required": ["city", "unit"]}
WEATHER: Any = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": SCHEMA}
CLOCK: Any = {"name": "get_time", "description": "The time now",
              "input_schema": {"type": "object", "properties": {}}}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCED: Any = {"tool_choice": {"type": "tool", "name": "get_weather"}, "max_tokens": 80, **ZERO}


async def test_a_forced_tool_gives_a_tool_use_block_matching_its_schema(daemon: Any) -> None:
    client, _, _ = daemon
    reply = await client.messages.create(model=SMOLLM2_ID, messages=ASK,
                                         tools=[WEATHER, CLOCK], **FORCED)
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and len(uses) == 1
    assert isinstance(uses[0], anthropic.types.ToolUseBlock)
    assert uses[0].id.startswith("toolu_") and uses[0].name == "get_weather"
    jsonschema.validate(uses[0].input, SCHEMA)
    any_call = await client.messages.create(model=SMOLLM2_ID, messages=ASK, tools=[WEATHER],
                                            tool_choice={"type": "any",
                                                         "disable_parallel_tool_use": True},
                                            max_tokens=80, **ZERO)
    assert [b.type for b in any_call.content if b.type == "tool_use"] == ["tool_use"]


async def test_the_stream_reassembles_to_the_forced_call(daemon: Any) -> None:
    client, _, _ = daemon
    whole = await client.messages.create(model=SMOLLM2_ID, messages=ASK, tools=[WEATHER],
                                         **FORCED)
    async with client.messages.stream(model=SMOLLM2_ID, messages=ASK, tools=[WEATHER],
                                      **FORCED) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.stop_reason == "tool_use"
    streamed = [b for b in final.content if b.type == "tool_use"]
    expected = [b for b in whole.content if b.type == "tool_use"]
    assert len(streamed) == 1 and streamed[0].name == "get_weather"
    assert streamed[0].input == expected[0].input  # type: ignore[union-attr]
    jsonschema.validate(streamed[0].input, SCHEMA)


async def test_a_tool_result_round_trip_gets_an_answer(daemon: Any) -> None:
    client, _, _ = daemon
    first = await client.messages.create(model=SMOLLM2_ID, messages=ASK, tools=[WEATHER],
                                         **FORCED)
    use = next(b for b in first.content if b.type == "tool_use")
    history: Any = [*ASK, {"role": "assistant", "content": first.content},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                  "content": [{"type": "text",
                                                               "text": "Sunny, 21 C"}]}]}]
    answer = await client.messages.create(model=SMOLLM2_ID, messages=history, tools=[WEATHER],
                                          max_tokens=30, **ZERO)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content
    errored: Any = [*history[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "content": "no such city",
         "is_error": True}]}]
    again = await client.messages.create(model=SMOLLM2_ID, messages=errored, tools=[WEATHER],
                                         tool_choice={"type": "none"}, max_tokens=10, **ZERO)
    assert again.stop_reason in ("end_turn", "max_tokens")
    assert all(b.type == "text" for b in again.content)


async def test_count_tokens_counts_the_tools(daemon: Any) -> None:
    client, _, _ = daemon
    bare = await client.messages.count_tokens(model=SMOLLM2_ID, messages=ASK)
    with_tools = await client.messages.count_tokens(model=SMOLLM2_ID, messages=ASK,
                                                    tools=[WEATHER],
                                                    tool_choice=FORCED["tool_choice"])
    reply = await client.messages.create(model=SMOLLM2_ID, messages=ASK, tools=[WEATHER],
                                         **FORCED)
    assert with_tools.input_tokens > bare.input_tokens
    assert reply.usage.input_tokens == with_tools.input_tokens


@pytest.mark.parametrize(("tools", "choice", "field"), [
    ([{**WEATHER, "name": "bad name!"}], None, "tools.0.name"),
    ([WEATHER, WEATHER], None, "tools.1.name"),
    ([{**WEATHER, "input_schema": {"type": "array"}}], None, "tools.0.input_schema"),
    ([WEATHER], {"type": "tool", "name": "nope"}, "tool_choice"),
])
async def test_bad_tool_definitions_are_anthropic_400s(daemon: Any, tools: Any, choice: Any,
                                                       field: str) -> None:
    client, _, _ = daemon
    extra = {"tool_choice": choice} if choice else {}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=SMOLLM2_ID, messages=ASK, tools=tools,
                                     max_tokens=5, **extra)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert field in caught.value.message
