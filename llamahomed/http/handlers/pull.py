"""POST /api/v1/models/pull (admin): download a model into the store, progress as NDJSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.keys import CONFIG, INFERENCE
from llamahomed.http.redact import for_client
from llamahomed.http.schemas import parse_body
from llamahomed.registry.policy import PullPolicy
from llamahomed.registry.pull import (
    PullProgress,
    PullResult,
    choose_by_plan,
    pull,
    resolve_source,
)

NDJSON = "application/x-ndjson"
log = structlog.get_logger(__name__)
PROGRESS_INTERVAL = 0.25  # seconds between two "downloading" lines


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(..., min_length=1, max_length=2000,
                       description="catalog id or alias (llama3.2-1b, llama3.2-1b:q8_0) or http(s) URL")
    variant: str | None = Field(None, max_length=32, description="catalog variant, e.g. Q4_K_M")
    sha256: str | None = Field(None, max_length=64, description="expected sha256 of the file")
    name: str | None = Field(None, max_length=250, description="file name in the store")
    stream: bool = Field(True, description="NDJSON progress lines (false: one JSON answer at the end)")


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def _summary(request: web.Request, result: PullResult) -> dict[str, Any]:
    registry = request.app[INFERENCE].registry
    entry = registry.resolve(result.path.stem)
    return {"status": "success", "done": True, "model": entry.id, "variant": entry.variant_id,
            "file": result.path.name, "quantization": entry.quantization, "size": entry.size,
            "sha256": result.sha256, "verified": result.verified,
            "already_present": result.already_present, "resumed_from": result.resumed_from}


async def follow(task: asyncio.Task[PullResult], events: asyncio.Queue[PullProgress],
                 send: Callable[[PullProgress], Awaitable[None]]) -> None:
    """Hand each progress event of a running pull to ``send`` until the pull ends (its
    result or error stays in ``task``)."""
    while True:
        while not events.empty():
            await send(events.get_nowait())
        if task.done():
            return
        getter = asyncio.ensure_future(events.get())
        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            await send(getter.result())
        else:
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter


async def pull_model(request: web.Request) -> web.StreamResponse:
    """Lines ``{"status": "downloading", "completed", "total", "file"}``, then ``{"status":
    "success", "done": true, ...}`` or an ``{"error": ...}`` line.

    Errors found before the first byte (unknown model, bad digest format, a host the pull policy
    refuses) are normal error responses. If the client goes away the download stops; its partial file stays, and the next
    pull of the same file resumes it.
    """
    body = await parse_body(request, PullRequest)
    settings = request.app[CONFIG].settings
    catalog = request.app[INFERENCE].registry.catalog
    source = resolve_source(body.model, catalog, variant=body.variant, sha256=body.sha256,
                            file_name=body.name, chooser=choose_by_plan(settings))
    policy = PullPolicy.from_settings(settings, catalog)
    policy.check_url(source.url)
    events: asyncio.Queue[PullProgress] = asyncio.Queue()
    task = asyncio.create_task(pull(source, settings.models_path, progress=events.put_nowait,
                                    policy=policy))
    try:
        if not body.stream:
            return web.json_response(_summary(request, await task))
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(_line({"status": "pulling", "file": source.file, "url": source.url,
                                    "quantization": source.variant.quantization
                                    if source.variant else None,
                                    "expected_sha256": source.sha256 or None}))
        last = 0.0

        async def send(event: PullProgress) -> None:
            nonlocal last
            now = time.monotonic()
            if event.status == "success" or (event.status == "downloading"
                                             and now - last < PROGRESS_INTERVAL):
                return  # the summary line below says success
            last = now
            await response.write(_line({"status": event.status, "completed": event.completed,
                                        "total": event.total, "file": event.file}))

        await follow(task, events, send)
        try:
            final = _summary(request, task.result())
        except LlamaHomeError as exc:
            final = for_client(exc, request).envelope()
        except Exception:  # noqa: BLE001 - the headers are out: the error goes in the stream
            log.exception("pull_failed", file=source.file)
            final = LlamaHomeError("internal error; the daemon log has the details").envelope()
        await response.write(_line(final))
        await response.write_eof()
        return response
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LlamaHomeError):
                await task
