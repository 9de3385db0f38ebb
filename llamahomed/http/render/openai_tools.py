"""OpenAI's shapes for an answer that may hold tool calls (``/v1/chat/completions`` with tools).

Whole answers: ``message.tool_calls: [{"id": "call_...", "type": "function", "function":
{"name", "arguments": "<JSON string>"}}]``, ``content`` null when the answer is only calls, and
``finish_reason: "tool_calls"``. Streamed: content deltas as usual, and each call, once the
parser has it whole, as two deltas the SDKs' accumulators merge: ``{"index", "id", "type",
"function": {"name", "arguments": ""}}`` then ``{"index", "function": {"arguments": "..."}}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from llamahomed.http.redact import for_client
from llamahomed.http.render.sse import SSE, finish_reason, usage
from llamahomed.service.generation import Delta, Errored, Finished, Generation
from llamahomed.service.tools import Call, Content, Parsed, ToolCall, ToolSet, ToolStream


def tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()}}


def reason(calls: bool, native: str | None) -> str:
    """``tool_calls`` when the answer made calls (and was not cut short)."""
    openai = finish_reason(native)
    return "tool_calls" if calls and openai != "length" else openai


def message(parsed: Parsed) -> dict[str, Any]:
    """The assistant message of a whole answer."""
    body: dict[str, Any] = {"role": "assistant",
                            "content": parsed.content if parsed.content or not parsed.calls else None}
    if parsed.calls:
        body["tool_calls"] = [tool_call(c) for c in parsed.calls]
    return body


def call_deltas(piece: Call) -> list[dict[str, Any]]:
    call = piece.call
    return [{"tool_calls": [{"index": piece.index, "id": call.id, "type": "function",
                             "function": {"name": call.name, "arguments": ""}}]},
            {"tool_calls": [{"index": piece.index,
                             "function": {"arguments": call.arguments_json()}}]}]


async def stream_tool_sse(request: web.Request, generation: Generation, tools: ToolSet,
                          base: dict[str, Any], include_usage: bool,
                          continuous_usage: bool = False) -> web.StreamResponse:
    """The answer as OpenAI chat chunks, its text split into content and calls as it comes.

    ``base``: the chunk's fixed fields (``id``, ``object``, ``created``, ``model``, ...)."""
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
    parser = ToolStream(tools.names())
    generated = 0

    async def send(data: dict[str, Any]) -> None:
        if continuous_usage and data.get("choices"):
            data["usage"] = usage({"prompt_tokens": generation.prompt_tokens,
                                   "completion_tokens": generated,
                                   "total_tokens": generation.prompt_tokens + generated})
        elif include_usage and data.get("choices") and "usage" not in data:
            data["usage"] = None
        await response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    async def delta(body: dict[str, Any], finish: str | None = None) -> None:
        await send({**base, "choices": [{"index": 0, "delta": body, "logprobs": None,
                                         "finish_reason": finish}]})

    async def pieces(found: list[Content | Call]) -> None:
        for piece in found:
            if isinstance(piece, Content):
                await delta({"content": piece.text})
            else:
                for body in call_deltas(piece):
                    await delta(body)

    try:
        await response.prepare(request)
        await delta({"role": "assistant", "content": None})
        async for event in generation.events():
            if isinstance(event, Delta):
                generated += event.tokens
                await pieces(parser.feed(event.text))
            elif isinstance(event, Errored):
                await send(for_client(event.error, request).openai_envelope())
                break
            elif isinstance(event, Finished):
                await pieces(parser.finish())
                await delta({}, reason(bool(parser.calls), event.finish_reason))
                if include_usage:
                    await send({**base, "choices": [], "usage": usage(event.usage)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    finally:
        await generation.close()
    return response
