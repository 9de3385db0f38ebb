"""GET /health (public), GET/POST /api/v1/config."""

from __future__ import annotations

import time

from aiohttp import web

from llamahomed import __version__
from llamahomed.http.keys import CONFIG, INFERENCE, STARTED_AT
from llamahomed.http.schemas import read_json


async def health(request: web.Request) -> web.Response:
    workers = request.app[INFERENCE].pool.workers()
    return web.json_response({
        "status": "ok", "version": __version__,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 1),
        "models_loaded": sorted(workers),
    })


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONFIG].public())


async def update_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONFIG].update(await read_json(request)))
