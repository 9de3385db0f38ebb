"""Ollama's shapes for a chat answer that may hold tool calls (``/api/chat`` with ``tools``).

The message gets ``tool_calls: [{"id", "function": {"index", "name", "arguments": {object}}}]``
(arguments an object, as Ollama sends them) and ``content`` is the text besides the calls
(``""`` when the answer is only calls); ``done_reason`` stays ``"stop"``, as Ollama's does.
Streamed, text goes out as it comes and each call in a chunk of its own once it is whole.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from llamahomed.http.redact import for_client
from llamahomed.http.render.ollama import NDJSON, line, statistics, timestamp
from llamahomed.service.generation import Delta, Errored, Generation
from llamahomed.service.tools import Call, Content, Piece, ToolSet, ToolStream, parse_text


def call_shape(piece: Call) -> dict[str, Any]:
    call = piece.call
    return {"id": call.id, "function": {"index": piece.index, "name": call.name,
                                        "arguments": call.arguments}}


def _message(content: str, calls: list[Call] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [call_shape(c) for c in calls]
    return message


async def answer(generation: Generation, name: str, tools: ToolSet) -> dict[str, Any]:
    """The whole answer as one object (``stream: false``)."""
    result = await generation.result()
    parsed = parse_text(result.text, tools.names())
    calls = [Call(i, c) for i, c in enumerate(parsed.calls)]
    return {"model": name, "created_at": timestamp(),
            "message": _message(parsed.content, calls), "done": True,
            **statistics(result.finished)}


async def stream(request: web.Request, generation: Generation, name: str,
                 tools: ToolSet) -> web.StreamResponse:
    """The answer as Ollama's NDJSON, text split from whole calls as it comes."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    parser = ToolStream(tools.names())

    async def write(pieces: list[Piece]) -> None:
        for piece in pieces:
            message = (_message(piece.text) if isinstance(piece, Content)
                       else _message("", [piece]))
            await response.write(line({"model": name, "created_at": timestamp(),
                                       "message": message, "done": False}))

    try:
        await response.prepare(request)
        async for event in generation.events():
            if isinstance(event, Delta):
                await write(parser.feed(event.text))
            elif isinstance(event, Errored):
                await response.write(line({"error": for_client(event.error, request).message}))
            else:
                await write(parser.finish())
                await response.write(line({"model": name, "created_at": timestamp(),
                                           "message": _message(""), "done": True,
                                           **statistics(event)}))
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await generation.close()
        raise
    finally:
        await generation.close()
    return response
