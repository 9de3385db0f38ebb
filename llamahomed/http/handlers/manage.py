"""Model actions (admin): load, unload, import, delete.

``POST /api/v1/models/{model_id}/load`` loads the model as a request would (the planner's
choice) and answers when it is ready; ``.../unload`` stops its worker (running requests end
with ``shutting_down``-style errors, so the console asks first); ``POST /api/v1/models/import``
adds a GGUF that is already on the daemon's machine; ``DELETE /api/v1/models/{model_id}``
removes a model's files (every variant, or one with ``id:quant``), unloading it first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.http.keys import INFERENCE
from llamahomed.http.schemas import parse_body


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, max_length=4096,
                      description="a .gguf file on the daemon's machine")


async def load_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    entry = await service.load(request.match_info["model_id"], may_reload=True)
    worker = service.pool.workers()[entry.id]
    return web.json_response({"id": entry.id, "variant": entry.variant_id, "loaded": True,
                              "pid": worker.pid, "load_ms": worker.info.get("load_ms")})


async def unload_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    entry = service.registry.resolve(request.match_info["model_id"])
    unloaded = await service.unload(entry.id)  # once its running requests end
    return web.json_response({"id": entry.id, "loaded": False, "was_loaded": unloaded})


async def import_model(request: web.Request) -> web.Response:
    body = await parse_body(request, ImportRequest)
    service = request.app[INFERENCE]
    entry = await asyncio.to_thread(service.registry.import_file, Path(body.path).expanduser())
    return web.json_response({"id": entry.id, "variant": entry.variant_id,
                              "file": entry.path.name, "size": entry.size})


async def delete_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    entry = service.registry.resolve(request.match_info["model_id"])
    await service.pool.unload(entry.id, "deleted")
    removed = await asyncio.to_thread(service.registry.remove, request.match_info["model_id"])
    return web.json_response({"id": entry.id, "removed": [p.name for p in removed]})
