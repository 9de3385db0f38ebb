"""The Anthropic SSE renderer's tool_use blocks, read back by the official SDK's stream
accumulator: a small aiohttp app on a socket writes a text block and two tool calls with
``MessageEvents`` (what the messages handler will write once tool calling is wired in)."""

from __future__ import annotations

from typing import Any

import anthropic
from aiohttp import web

from llamahomed.http.render.anthropic import MessageEvents, SSE, message


async def tool_answer(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": SSE})
    await response.prepare(request)
    events = MessageEvents(response)
    await events.start(message("msg_test", "m", [], None, None,
                               {"input_tokens": 5, "output_tokens": 0}))
    await events.text("Let me check ")
    await events.text("the weather.")
    await events.tool_use("toolu_a", "get_weather", {"city": "Paris", "days": [1, 2]})
    await events.tool_use("toolu_b", "get_time", {})
    await events.finish("tool_use", None, {"input_tokens": 5, "output_tokens": 9})
    await response.write_eof()
    return response


async def test_the_sdk_assembles_text_and_tool_use_blocks(aiohttp_client: Any) -> None:
    app = web.Application()
    app.router.add_post("/v1/messages", tool_answer)
    server = await aiohttp_client(app)
    async with anthropic.AsyncAnthropic(base_url=str(server.make_url("")), api_key="k",
                                        max_retries=0) as client:
        async with client.messages.stream(model="m", max_tokens=9,
                                          messages=[{"role": "user", "content": "?"}]) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 9
    text, weather, clock = final.content
    assert text.type == "text" and text.text == "Let me check the weather."
    assert weather.type == "tool_use" and clock.type == "tool_use"
    assert (weather.id, weather.name, weather.input) == (
        "toolu_a", "get_weather", {"city": "Paris", "days": [1, 2]})
    assert (clock.id, clock.name, clock.input) == ("toolu_b", "get_time", {})
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 3
    assert kinds[-2:] == ["message_delta", "message_stop"]
