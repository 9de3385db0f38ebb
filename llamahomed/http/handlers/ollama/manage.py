"""Model management in Ollama's words (admin): POST /api/pull, DELETE /api/delete,
POST /api/copy, POST /api/create.

``/api/pull`` downloads a catalog id (``gemma3:270m``, ``llama3.2-1b:q8_0``) or an http(s) URL
through the store's one pull (resumable, sha256-verified, the pull policy's hosts), with
Ollama's progress objects (``status``, ``digest``, ``total``, ``completed``). ``/api/copy``
gives a model a second name (a hard link: no disk used); ``/api/create`` makes a model from one
(``from``) or from a GGUF uploaded with ``/api/blobs`` (``files``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from llamahomed.core.errors import AlreadyExists, InvalidRequest, LlamaHomeError, NotFound
from llamahomed.http.handlers.ollama.blobs import blob_path
from llamahomed.http.handlers.ollama.names import resolve, split, store_name
from llamahomed.http.handlers.ollama.schemas import (
    CopyRequest,
    CreateRequest,
    ModelRequest,
    PullRequest,
)
from llamahomed.http.handlers.pull import follow
from llamahomed.http.keys import CONFIG, INFERENCE
from llamahomed.http.redact import for_client
from llamahomed.http.render.ollama import NDJSON, line
from llamahomed.http.schemas import parse_body
from llamahomed.registry.download import PullProgress
from llamahomed.registry.gguf_meta import GGUFError, read_model_info
from llamahomed.registry.policy import PullPolicy
from llamahomed.registry.pull import choose_by_plan, pull as pull_source, resolve_source
from llamahomed.registry.store import ModelEntry
from llamahomed.service.inference import InferenceService

log = structlog.get_logger(__name__)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
PROGRESS_INTERVAL = 0.25


def _catalog_name(name: str) -> str:
    """What the store's pull takes for an Ollama name: ``:latest`` means the planner's pick."""
    if _URL.match(name):
        return name
    base, tag = split(name)
    return base if tag == "latest" else name


async def pull(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, PullRequest)
    if not body.which:
        raise InvalidRequest("model is required")
    settings = request.app[CONFIG].settings
    catalog = request.app[INFERENCE].registry.catalog
    source = await asyncio.to_thread(resolve_source, _catalog_name(body.which), catalog,
                                     chooser=choose_by_plan(settings))
    policy = PullPolicy.from_settings(settings, catalog)
    policy.check_url(source.url)
    digest = "sha256:" + (source.sha256 or hashlib.sha256(source.url.encode()).hexdigest())
    events: asyncio.Queue[PullProgress] = asyncio.Queue()
    task = asyncio.create_task(pull_source(source, settings.models_path,
                                           progress=events.put_nowait, policy=policy))
    try:
        if not body.stream:
            await task
            return web.json_response({"status": "success"})
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(line({"status": "pulling manifest"}))
        last = 0.0

        async def send(event: PullProgress) -> None:
            nonlocal last
            now = asyncio.get_running_loop().time()
            if event.status == "downloading":
                if now - last < PROGRESS_INTERVAL and event.completed != event.total:
                    return
                last = now
                data: dict[str, Any] = {"status": f"pulling {digest[7:19]}", "digest": digest,
                                        "completed": event.completed}
                if event.total is not None:
                    data["total"] = event.total
                await response.write(line(data))
            elif event.status == "verifying":
                await response.write(line({"status": "verifying sha256 digest"}))

        await follow(task, events, send)
        try:
            task.result()
        except LlamaHomeError as exc:
            await response.write(line({"error": for_client(exc, request).message}))
        except Exception:  # noqa: BLE001 - the headers are out: the error goes in the stream
            log.exception("pull_failed", file=source.file)
            await response.write(line({"error": "internal error; the daemon log has the details"}))
        else:
            await response.write(line({"status": "writing manifest"}))
            await response.write(line({"status": "success"}))
        await response.write_eof()
        return response
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LlamaHomeError):
                await task


async def _unload_file(service: InferenceService, entry: ModelEntry) -> None:
    """Unload the model if ``entry`` is the file it runs from (before the file goes)."""
    worker = service.pool.workers().get(entry.id)
    if worker is not None and worker.config.model_path == str(entry.path):
        await service.unload(entry.id)


async def delete(request: web.Request) -> web.Response:
    """One name's file goes (``x`` / ``x:latest``: the one ``/api/tags`` lists as latest)."""
    body = await parse_body(request, ModelRequest)
    service = request.app[INFERENCE]
    _, entries = await resolve(service, body.which)
    entry = entries[0]
    await _unload_file(service, entry)
    try:
        entry.path.unlink()
    except FileNotFoundError:
        pass
    log.info("model_deleted", model=entry.id, file=entry.path.name)
    return web.json_response({})


async def _new_name(service: InferenceService, source: Path, name: str) -> ModelEntry:
    """Place ``source`` (a GGUF) in the store as the model ``name`` (a hard link)."""
    try:
        info = await asyncio.to_thread(read_model_info, source)
    except GGUFError as exc:
        raise InvalidRequest(f"not a usable GGUF file: {exc}") from exc
    model_id, stem = store_name(name, info.quantization)
    target = f"{stem}.gguf"
    if (service.registry.models_dir / target).exists():
        raise AlreadyExists(f"model '{name}' already exists", details={"model": name})
    try:
        entry = await asyncio.to_thread(service.registry.import_file, source, target)
    except InvalidRequest as exc:
        raise InvalidRequest(f"cannot create model '{name}': {exc.message}") from exc
    log.info("model_named", model=model_id, file=target)
    return entry


async def copy(request: web.Request) -> web.Response:
    body = await parse_body(request, CopyRequest)
    service = request.app[INFERENCE]
    _, entries = await resolve(service, body.source)
    await _new_name(service, entries[0].path, body.destination)
    return web.json_response({})


async def create(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CreateRequest)
    problems = body.refused()
    if problems:
        field, why = problems[0]
        raise InvalidRequest(f"{field}: {why}", details={"errors": [
            {"field": f, "message": m} for f, m in problems]})
    if not body.which:
        raise InvalidRequest("model is required")
    service = request.app[INFERENCE]
    statuses = []
    if body.from_:
        _, entries = await resolve(service, body.from_)
        source = entries[0].path
        statuses.append({"status": f"using existing model {entries[0].variant_id}"})
    else:
        assert body.files is not None
        (file_name, digest), = body.files.items()
        source = blob_path(request.app[CONFIG].settings, digest)
        if not source.is_file():
            raise NotFound(f"blob {digest[:80]!r} not found: upload it with "
                           "POST /api/blobs/sha256:<digest> first", details={"file": file_name})
        statuses.append({"status": "parsing GGUF"})
    await _new_name(service, source, body.which)
    statuses += [{"status": "writing manifest"}, {"status": "success"}]
    if not body.stream:
        return web.json_response({"status": "success"})
    return web.Response(body=b"".join(line(s) for s in statuses), content_type=NDJSON)
