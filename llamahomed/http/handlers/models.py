"""GET /api/v1/models and /api/v1/models/{model_id}."""

from __future__ import annotations

import asyncio

from aiohttp import web

from llamahomed.http.keys import INFERENCE
from llamahomed.service.describe import describe


async def list_models(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    groups = service.registry.models()
    machine = await asyncio.to_thread(service.read_machine)
    # Off the event loop: a plan may probe RPC hosts (system_settings.rpc_servers).
    described = await asyncio.to_thread(
        lambda: [describe(service, entries, machine, detail=False) for entries in groups.values()])
    return web.json_response({"models": described,
                              "waiting": [w.to_dict() for w in service.scheduler.waiting()]})


async def get_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    entries = service.candidates(request.match_info["model_id"])
    machine = await asyncio.to_thread(service.read_machine)
    return web.json_response(await asyncio.to_thread(describe, service, entries, machine,
                                                     detail=True))
