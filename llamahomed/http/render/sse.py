"""OpenAI's server-sent events: ``data: {chunk}`` events, then ``data: [DONE]``.

The handler says how a chunk looks (chat or text completion); this writes the opening chunk,
the deltas, the closing chunk with the finish reason, the usage chunk when asked, and an error
after the first byte as a ``data: {"error": ...}`` event (OpenAI's SDKs raise it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llamahomed.http.redact import for_client
from llamahomed.service.generation import Delta, Errored, Generation

SSE = "text/event-stream"

Chunk = Callable[..., dict[str, Any]]
"""``chunk(text, finish_reason, first=False)``: one chunk object of the dialect."""


def finish_reason(reason: str | None) -> str:
    """OpenAI has ``stop`` and ``length``; a cancelled sequence stopped."""
    return "length" if reason == "length" else "stop"


def usage(values: dict[str, Any]) -> dict[str, int]:
    return {key: int(values.get(key, 0)) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


async def stream_sse(request: web.Request, generation: Generation, chunk: Chunk,
                     include_usage: bool, *, opening: bool,
                     continuous_usage: bool = False) -> web.StreamResponse:
    """Write ``generation`` as OpenAI SSE; a client that goes away cancels the sequence.

    ``continuous_usage`` (vLLM's ``stream_options.continuous_usage_stats``): every chunk carries
    the usage so far."""
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
    generated = 0

    async def send(data: dict[str, Any]) -> None:
        if continuous_usage and "choices" in data and data["choices"]:
            data["usage"] = usage({"prompt_tokens": generation.prompt_tokens,
                                   "completion_tokens": generated,
                                   "total_tokens": generation.prompt_tokens + generated})
        elif include_usage and "choices" in data and "usage" not in data:
            data["usage"] = None
        await response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    try:
        await response.prepare(request)
        if opening:
            await send(chunk(None, None, first=True))
        async for event in generation.events():
            if isinstance(event, Delta):
                generated += event.tokens
                await send(chunk(event.text, None))
            elif isinstance(event, Errored):
                await send(for_client(event.error, request).openai_envelope())
                break
            else:
                await send(chunk(None, finish_reason(event.finish_reason)))
                if include_usage:
                    final = chunk(None, None)
                    final["choices"] = []
                    final["usage"] = usage(event.usage)
                    await send(final)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    finally:
        await generation.close()
    return response
