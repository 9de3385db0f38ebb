"""GET /health (public), GET/POST /api/v1/config."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llamahomed import __version__
from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.keys import AUTHORITY, CONFIG, INFERENCE, STARTED_AT
from llamahomed.http.schemas import read_json


async def health(request: web.Request) -> web.Response:
    """Liveness for anyone; which models are loaded only for a caller with a valid token."""
    data: dict[str, Any] = {"status": "ok", "version": __version__,
                            "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 1)}
    header = request.headers.get("Authorization")
    if header:
        try:
            request.app[AUTHORITY].check(header)
        except LlamaHomeError:
            pass
        else:
            data["models_loaded"] = sorted(request.app[INFERENCE].pool.workers())
    return web.json_response(data)


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONFIG].public())


async def update_config(request: web.Request) -> web.Response:
    answer = request.app[CONFIG].update(await read_json(request))
    request.app[INFERENCE].pool.spare.refresh()  # system_settings.spare_worker may have changed
    return web.json_response(answer)
