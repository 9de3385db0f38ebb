"""The application factory: routes, middlewares, and the resources they share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from llamahomed.api import generate, metrics, models, status, system
from llamahomed.api.keys import AUTHORITY, CONFIG, INFERENCE, METRICS, MONITORING, STARTED_AT
from llamahomed.api.middleware import (add_request_id_header, auth_middleware, error_middleware,
                                       request_id_middleware)
from llamahomed.config_store import ConfigStore
from llamahomed.engine.pool import WorkerPool
from llamahomed.inference import InferenceService, Performance
from llamahomed.metrics import Monitoring
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.store import ModelRegistry
from llamahomed.security import Authority, ensure_admin_token
from llamahomed.settings import Settings


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", system.health)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/api/v1/status", status.status)
    app.router.add_post("/api/v1/process", generate.process)
    app.router.add_post("/api/v1/stream", generate.stream)
    app.router.add_post("/api/v1/batch", generate.batch)
    app.router.add_get("/api/v1/models", models.list_models)
    app.router.add_get("/api/v1/models/{model_id}", models.get_model)
    app.router.add_get("/api/v1/config", system.get_config)
    app.router.add_post("/api/v1/config", system.update_config)


def create_app(settings: Settings) -> web.Application:
    """A ready-to-run app; workers start on first use and stop in cleanup."""
    app = web.Application(
        middlewares=[request_id_middleware, metrics.metrics_middleware, error_middleware,
                     auth_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"max_field_size": 16384, "max_line_size": 16384},
    )
    config = ConfigStore(settings)
    app[CONFIG] = config
    app[STARTED_AT] = time.monotonic()
    app[MONITORING] = Monitoring.create(
        tracing=settings.tracing,
        workers=lambda: app[INFERENCE].pool.workers() if INFERENCE in app else {})
    app[METRICS] = app[MONITORING].metrics
    authority = Authority.from_settings(settings)
    ensure_admin_token(settings, authority)
    app[AUTHORITY] = authority
    app.cleanup_ctx.append(_inference_ctx)
    app.on_response_prepare.append(add_request_id_header)
    add_routes(app)
    return app


async def _inference_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = config.settings
    registry = ModelRegistry(settings.models_path, Catalog.load())
    monitoring = app[MONITORING]
    pool = WorkerPool(start_timeout=settings.worker_start_timeout,
                      keep_alive=lambda: config.settings.system_settings.keep_alive,
                      observer=monitoring.observer)
    performance = Performance(settings.measurements_file)
    app[INFERENCE] = InferenceService(config, registry, pool, performance, monitoring.metrics)
    yield
    await pool.close()
    performance.save()
