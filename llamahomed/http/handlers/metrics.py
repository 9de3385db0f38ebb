"""GET /metrics (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web

from llamahomed.http.keys import MONITORING


async def metrics(request: web.Request) -> web.Response:
    # On the loop thread: the collectors read worker state that only this thread changes.
    metrics = request.app[MONITORING].metrics
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})
