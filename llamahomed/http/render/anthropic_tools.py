"""Anthropic's shapes for an answer that may hold tool calls (``/v1/messages`` with ``tools``).

Each call is a ``tool_use`` block ``{"id": "toolu_...", "name", "input": {object}}`` after the
answer's text block (if any), and ``stop_reason`` is ``tool_use`` when the answer made calls
(``max_tokens`` still wins when the limit cut it). Streamed, text deltas go out as they come;
each call, once whole, is a ``content_block_start`` (``input: {}``), one ``input_json_delta``
and a ``content_block_stop`` (``MessageEvents.tool_use``).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from llamahomed.http.keys import REQUEST_ID
from llamahomed.http.redact import for_client
from llamahomed.http.render.anthropic import (
    MessageEvents,
    error_body,
    message,
    stop_reason,
    text_block,
    tool_use_block,
    usage,
)
from llamahomed.http.render.sse import SSE
from llamahomed.service.generation import Delta, Errored, Finished, Generation
from llamahomed.service.tools import Call, Content, Piece, ToolSet, ToolStream, parse_text


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def reason(finished: Finished, calls: bool) -> tuple[str, str | None]:
    native = stop_reason(finished)
    return ("tool_use", None) if calls and native[0] != "max_tokens" else native


async def whole(generation: Generation, reply_id: str, tools: ToolSet) -> dict[str, Any]:
    """The whole answer as a Message, its calls as ``tool_use`` blocks."""
    result = await generation.result()
    parsed = parse_text(result.text, tools.names())
    content = [text_block(parsed.content)] if parsed.content.strip() else []
    content += [tool_use_block(tool_use_id(), c.name, c.arguments) for c in parsed.calls]
    why, sequence = reason(result.finished, bool(parsed.calls))
    return message(reply_id, generation.entry.id, content, why, sequence,
                   usage(result.finished.usage))


async def stream(request: web.Request, generation: Generation, reply_id: str, tools: ToolSet,
                 headers: dict[str, str] | None = None) -> web.StreamResponse:
    """The answer as Anthropic's SSE events, text split from whole calls as it comes."""
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache",
                                           **(headers or {})})
    events = MessageEvents(response)
    parser = ToolStream(tools.names())

    async def write(pieces: list[Piece]) -> None:
        for piece in pieces:
            if isinstance(piece, Content):
                await events.text(piece.text)
            elif isinstance(piece, Call):
                await events.tool_use(tool_use_id(), piece.call.name, piece.call.arguments)

    try:
        await response.prepare(request)
        await events.start(message(reply_id, generation.entry.id, [], None, None,
                                   usage({"prompt_tokens": generation.prompt_tokens})))
        async for event in generation.events():
            if isinstance(event, Delta):
                await write(parser.feed(event.text))
            elif isinstance(event, Errored):
                await events.error(error_body(for_client(event.error, request),
                                              request.get(REQUEST_ID)))
                break
            else:
                await write(parser.finish())
                why, sequence = reason(event, bool(parser.calls))
                await events.finish(why, sequence, usage(event.usage))
        await response.write_eof()
    finally:
        await generation.close()
    return response
