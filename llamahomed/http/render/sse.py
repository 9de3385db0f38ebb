"""OpenAI's server-sent events: ``data: {chunk}`` events, then ``data: [DONE]``.

The handler says how a chunk looks (chat or text completion); this writes the opening chunk,
the deltas, the closing chunk with the finish reason, the usage chunk when asked, and an error
after the first byte as a ``data: {"error": ...}`` event (OpenAI's SDKs raise it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from llamahomed.http.redact import for_client
from llamahomed.service.generation import (
    Delta,
    Errored,
    Generation,
    merged_events,
    request_usage,
)

SSE = "text/event-stream"

Chunk = Callable[..., dict[str, Any]]
"""``chunk(text, finish_reason, first=False, index=0)``: one chunk object of the dialect, for
choice ``index``."""


def finish_reason(reason: str | None) -> str:
    """OpenAI has ``stop`` and ``length``; a cancelled sequence stopped."""
    return "length" if reason == "length" else "stop"


def usage(values: dict[str, Any]) -> dict[str, int]:
    return {key: int(values.get(key, 0)) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


async def stream_sse(request: web.Request, generation: Generation | Sequence[Generation],
                     chunk: Chunk, include_usage: bool, *, opening: bool,
                     continuous_usage: bool = False) -> web.StreamResponse:
    """Write ``generation`` as OpenAI SSE; a client that goes away cancels the sequence.

    Several generations (``n`` choices) are written as their events come, each chunk with its
    choice's index, a closing chunk per choice, and one usage chunk after the last (the shared
    prompt counted once); an error ends the stream and stops every choice.
    ``continuous_usage`` (vLLM's ``stream_options.continuous_usage_stats``): every chunk carries
    the usage so far."""
    generations = [generation] if isinstance(generation, Generation) else list(generation)
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
    prompt_tokens = sum(g.prompt_tokens for g in generations if g.counts_prompt)
    generated = 0
    usages: list[dict[str, int]] = [{} for _ in generations]
    events = merged_events(generations)

    async def send(data: dict[str, Any]) -> None:
        if continuous_usage and "choices" in data and data["choices"]:
            data["usage"] = usage({"prompt_tokens": prompt_tokens,
                                   "completion_tokens": generated,
                                   "total_tokens": prompt_tokens + generated})
        elif include_usage and "choices" in data and "usage" not in data:
            data["usage"] = None
        await response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    try:
        await response.prepare(request)
        if opening:
            for index in range(len(generations)):
                await send(chunk(None, None, first=True, index=index))
        async for index, event in events:
            if isinstance(event, Delta):
                generated += event.tokens
                extra = {} if event.logprobs is None else {"logprobs": event.logprobs}
                await send(chunk(event.text, None, index=index, **extra))
            elif isinstance(event, Errored):
                await send(for_client(event.error, request).openai_envelope())
                break
            else:
                usages[index] = event.usage
                await send(chunk(None, finish_reason(event.finish_reason), index=index))
        else:
            if include_usage:
                final = chunk(None, None)
                final["choices"] = []
                final["usage"] = usage(request_usage(generations, usages))
                await send(final)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    finally:
        await events.aclose()  # stops the choices still running (the client went away)
        for each in generations:
            await each.close()
    return response
