"""LlamaHome's generation routes: POST /api/v1/process, /api/v1/stream and /api/v1/batch."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.access import is_admin, owner
from llamahomed.http.guard import stream_slot
from llamahomed.http.keys import CLAIMS, INFERENCE
from llamahomed.http.redact import for_client
from llamahomed.http.ratelimit import charge_items, request_meter
from llamahomed.http.render.native import stream_ndjson
from llamahomed.http.schemas import BatchRequest, ProcessRequest, parse_body
from llamahomed.service.generation import Generation
from llamahomed.service.options import NativeOptions


async def _start(request: web.Request, options: NativeOptions, prompt: str | None,
                 messages: list[dict[str, Any]] | None = None) -> Generation:
    """A native generation: the prompt goes through the model's chat template unless ``raw``;
    ``messages`` (a conversation, system included) always do."""
    service = request.app[INFERENCE]
    if messages is not None:
        return await service.generate(options, messages=messages, raw=False,
                                      meter=request_meter(request), may_reload=is_admin(request),
                                      owner=owner(request), keep_alive=options.keep_alive)
    return await service.generate(options, prompt=prompt, system=options.system, raw=options.raw,
                                  meter=request_meter(request), may_reload=is_admin(request),
                                  owner=owner(request), keep_alive=options.keep_alive)


async def process(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ProcessRequest)
    if body.stream:
        return await _stream(request, body)
    result = await (await _start(request, body, body.prompt, body.turns())).result()
    return web.json_response(result.native())


async def stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, await parse_body(request, ProcessRequest))


async def _stream(request: web.Request, body: ProcessRequest) -> web.StreamResponse:
    """NDJSON lines; errors found before the first byte (bad model, prompt too long) are normal
    error responses. A stream holds one of its user's ``max_streams_per_token`` slots."""
    with stream_slot(request.app, request.get(CLAIMS)):
        return await stream_ndjson(request, await _start(request, body, body.prompt,
                                                               body.turns()))


async def batch(request: web.Request) -> web.StreamResponse:
    """Every prompt submitted at once; results in order, each with its usage or its error."""
    body = await parse_body(request, BatchRequest)
    charge_items(request, len(body.prompts))

    async def one(prompt: str) -> dict[str, Any]:
        try:
            return (await (await _start(request, body, prompt)).result()).native()
        except LlamaHomeError as exc:
            return for_client(exc, request).envelope()

    results = await asyncio.gather(*(one(p) for p in body.prompts))
    return web.json_response({"results": list(results)})
