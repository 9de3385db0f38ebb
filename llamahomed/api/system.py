"""GET /health (public), GET/POST /api/v1/config."""

from __future__ import annotations

import time

from aiohttp import web

from llamahomed import __version__
from llamahomed.api.keys import CLAIMS, CONFIG, INFERENCE, STARTED_AT
from llamahomed.api.schemas import read_json
from llamahomed.errors import PermissionDenied


def require_scope(request: web.Request, scope: str) -> None:
    """403 unless the request's token carries ``scope``."""
    claims = request.get(CLAIMS)
    if claims is None or not claims.has_scope(scope):
        raise PermissionDenied(f"this route needs a token with the {scope!r} scope",
                               details={"required_scope": scope})


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
    require_scope(request, "admin")
    return web.json_response(request.app[CONFIG].update(await read_json(request)))
