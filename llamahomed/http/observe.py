"""The middleware that counts, times and logs (one summary line) every request."""

from __future__ import annotations

import asyncio
import hashlib
import time

import structlog
from aiohttp import web

from llamahomed.http.keys import CLAIMS, MONITORING, REQUEST_ID
from llamahomed.http.middleware import Handler
from llamahomed.observability.tracing import request_context

log = structlog.get_logger("llamahomed.request")

CLIENT_GONE = 499  # nginx's "client closed request", for requests whose client went away


def subject_hash(user_id: str) -> str:
    """Who made a request, without naming them in the log."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, time and log (one summary line) every request; count clients that go away."""
    started = time.perf_counter()
    status = 500
    route_resource = request.match_info.route.resource
    route = route_resource.canonical if route_resource is not None else "unmatched"
    with request_context(request.get(REQUEST_ID, "")) as context:
        try:
            response = await handler(request)
            status = response.status
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            if request.transport is None or request.transport.is_closing():
                status = CLIENT_GONE
                request.app[MONITORING].metrics.client_disconnected(route)
            raise
        finally:
            duration = time.perf_counter() - started
            request.app[MONITORING].metrics.record_request(route, duration, status)
            claims = request.get(CLAIMS)
            fields = context.log_fields()
            if claims is not None:
                fields["subject"] = subject_hash(claims.user_id)
            log.info("request", request_id=context.request_id, method=request.method,
                     route=route, status=status, duration_ms=round(duration * 1000, 2), **fields)
