"""POST /api/v1/process, /api/v1/stream and /api/v1/batch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from llamahomed.http.access import requires_scope
from llamahomed.http.guard import stream_slot
from llamahomed.http.keys import CONFIG, INFERENCE
from llamahomed.http.ratelimit import note_usage
from llamahomed.http.schemas import BatchRequest, GenerationFields, ProcessRequest, parse_body
from llamahomed.engine.handle import sequence_error
from llamahomed.core.errors import LlamaHomeError
from llamahomed.service.inference import Generation, InferenceService

NDJSON = "application/x-ndjson"


def final_fields(generation: Generation, done: dict[str, Any]) -> dict[str, Any]:
    final = {"usage": done["usage"], "finish_reason": done["finish_reason"],
             "model": generation.entry.id, "created": generation.created}
    if "cache" in done:  # prompt-cache hits: prompt tokens whose KV was reused, not prefilled
        final["cache"] = done["cache"]
    if "trace" in done:  # with the tracing setting: request id and phases in ms
        final["trace"] = done["trace"]
    return final


async def _start(request: web.Request, fields: GenerationFields, prompt: str) -> Generation:
    settings = request.app[CONFIG].settings
    params = fields.sampling(settings.model_settings, settings.system_settings)
    return await request.app[INFERENCE].start(fields.model, prompt, params)


async def collect(service: InferenceService, generation: Generation) -> dict[str, Any]:
    """Run a sequence to its end and return the guide's process response."""
    parts: list[str] = []
    try:
        async for event in generation.stream.events():
            if event["kind"] == "text":
                parts.append(event["text"])
            elif event["kind"] == "error":
                raise sequence_error(event)
            elif event["kind"] == "done":
                service.finished(generation, event)
                return {"text": "".join(parts), **final_fields(generation, event)}
    finally:
        await generation.stream.cancel()
    raise LlamaHomeError("the sequence ended without a result")


@requires_scope("inference")
async def process(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ProcessRequest)
    if body.stream:
        return await _stream(request, body)
    generation = await _start(request, body, body.prompt)
    result = await collect(request.app[INFERENCE], generation)
    note_usage(request, result["usage"])
    return web.json_response(result)


@requires_scope("inference")
async def stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, await parse_body(request, ProcessRequest))


async def _stream(request: web.Request, body: ProcessRequest) -> web.StreamResponse:
    """A stream holds one of its user's ``max_streams_per_token`` slots while it runs."""
    async with stream_slot(request):
        return await _write_stream(request, body)


async def _write_stream(request: web.Request, body: ProcessRequest) -> web.StreamResponse:
    """NDJSON: ``{"chunk", "index"}`` lines, then ``{"done": true, ...}`` or ``{"error": ...}``.

    Errors found before the first byte (bad model, prompt too long) are normal error responses;
    the worker accepted the prompt before the headers go out. If the client goes away, the
    sequence is cancelled at the worker's next step.
    """
    generation = await _start(request, body, body.prompt)
    service = request.app[INFERENCE]
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    index = 0
    try:
        await response.prepare(request)
        async for event in generation.stream.events():
            if event["kind"] == "text":
                line: dict[str, Any] = {"chunk": event["text"], "index": index}
                index += 1
            elif event["kind"] == "done":
                service.finished(generation, event)
                note_usage(request, event["usage"])
                line = {"done": True, **final_fields(generation, event)}
            else:
                line = sequence_error(event).envelope()
            await response.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await generation.stream.cancel()
        raise
    finally:
        await generation.stream.cancel()
    return response


@requires_scope("inference")
async def batch(request: web.Request) -> web.StreamResponse:
    """Every prompt submitted at once; results in order, each with its usage or its error."""
    body = await parse_body(request, BatchRequest)
    service = request.app[INFERENCE]

    async def one(prompt: str) -> dict[str, Any]:
        try:
            result = await collect(service, await _start(request, body, prompt))
        except LlamaHomeError as exc:
            return exc.envelope()
        note_usage(request, result["usage"])
        return result

    results = await asyncio.gather(*(one(p) for p in body.prompts))
    return web.json_response({"results": list(results)})
