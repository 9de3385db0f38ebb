"""The application factory: routes, middlewares, and the resources they share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from llamahomed.core.authority import Authority, ensure_admin_token
from llamahomed.core.config_store import ConfigStore
from llamahomed.core.resources import llama_devices_isolated
from llamahomed.core.settings import Settings
from llamahomed.engine.spare import Spawned
from llamahomed.http import ratelimit
from llamahomed.http.access import auth_middleware
from llamahomed.http.guard import guard_middleware, setup_guard
from llamahomed.http.handlers import console, ws
from llamahomed.http.observe import metrics_middleware
from llamahomed.http.keys import (
    AUTHORITY,
    CONFIG,
    INFERENCE,
    METRICS,
    MONITORING,
    ROUTES,
    STARTED_AT,
)
from llamahomed.http.middleware import (
    add_request_id_header,
    error_middleware,
    request_id_middleware,
)
from llamahomed.http.routes import route_table
from llamahomed.observability.metrics import Monitoring
from llamahomed.service.inference import InferenceService


# A worker started before the app (``llamahomed start``), for the pool to keep as its spare.
EARLY_SPARE = web.AppKey("early_spare", Spawned)


def create_app(settings: Settings, *, spare: Spawned | None = None) -> web.Application:
    """A ready-to-run app; workers start on first use and stop in cleanup. ``spare``: a worker
    process started ahead (``llamahomed start`` starts it before importing the app), which
    the pool keeps as its spare."""
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, error_middleware,
                     guard_middleware, auth_middleware, ratelimit.ratelimit_middleware],
        client_max_size=settings.max_body_bytes,
        # aiohttp's own hard caps (a plain 400 beyond); max_header_bytes (431, enveloped) is lower.
        handler_args={"max_field_size": 65536, "max_line_size": 16384},
    )
    config = ConfigStore(settings)
    app[CONFIG] = config
    if spare is not None:
        app[EARLY_SPARE] = spare
    app[STARTED_AT] = time.monotonic()
    app[MONITORING] = Monitoring.create(
        tracing=settings.tracing,
        workers=lambda: app[INFERENCE].pool.workers() if INFERENCE in app else {})
    app[METRICS] = app[MONITORING].metrics
    authority = Authority.from_settings(settings)
    ensure_admin_token(settings, authority)
    app[AUTHORITY] = authority
    setup_guard(app)
    app.cleanup_ctx.append(_authority_ctx)
    app.cleanup_ctx.append(_inference_ctx)
    app.on_response_prepare.append(add_request_id_header)
    ratelimit.setup(app)
    ws.setup(app)
    console.setup(app)
    app[ROUTES] = route_table()
    app[ROUTES].install(app)
    return app


async def _authority_ctx(app: web.Application) -> AsyncIterator[None]:
    app[AUTHORITY].prune_keys()
    yield
    app[AUTHORITY].close()


async def _inference_ctx(app: web.Application) -> AsyncIterator[None]:
    app[INFERENCE] = service = InferenceService.create(app[CONFIG], app[MONITORING])
    if EARLY_SPARE in app:
        service.pool.spare.adopt(app[EARLY_SPARE])
    service.pool.spare.refresh()  # a worker started ahead for the first load
    # The first plan reads llama.cpp's device list in a child process: read it now, meanwhile.
    devices = asyncio.get_running_loop().run_in_executor(None, llama_devices_isolated)
    yield
    await asyncio.gather(devices, return_exceptions=True)
    await service.close()
