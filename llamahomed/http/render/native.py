"""LlamaHome's own lines: ``{"chunk", "index"}``, then ``{"done": true, ...}`` or an error.

The same objects go out as NDJSON lines (``/api/v1/stream``, ``/api/v1/process`` with
``stream``) and as WebSocket messages (with the request's ``id`` added).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.redact import for_client
from llamahomed.service.generation import Delta, Errored, Event, Generation

NDJSON = "application/x-ndjson"


class NativeLines:
    """Renders one generation's events; counts the chunks. ``redact`` shapes an error for its
    reader (``http/redact.for_client`` bound to the request)."""

    def __init__(self, redact: Callable[[LlamaHomeError], LlamaHomeError] | None = None) -> None:
        self.index = 0
        self.redact = redact

    def render(self, event: Event) -> dict[str, Any]:
        if isinstance(event, Delta):
            line: dict[str, Any] = {"chunk": event.text, "index": self.index}
            if event.logprobs is not None:
                line["logprobs"] = event.logprobs
            self.index += 1
            return line
        if isinstance(event, Errored):
            error = self.redact(event.error) if self.redact else event.error
            return error.envelope()
        return {"done": True, **event.summary()}


async def stream_ndjson(request: web.Request, generation: Generation) -> web.StreamResponse:
    """Write ``generation`` as NDJSON lines (the headers go out once the prompt was accepted).

    If the client goes away, leaving the loop cancels the sequence at the worker's next step.
    """
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    lines = NativeLines(lambda error: for_client(error, request))
    try:
        await response.prepare(request)
        async for event in generation.events():
            line = lines.render(event)
            await response.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await generation.close()
        raise
    return response
