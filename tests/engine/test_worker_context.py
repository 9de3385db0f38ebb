"""Issue 12 (smaller): a worker's own log lines never carry the request id of the request that
happened to load it."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import structlog
from structlog.testing import capture_logs

from llamahomed.http.keys import INFERENCE


async def test_worker_died_is_logged_without_the_loading_requests_id(
        api: Any, auth: dict[str, str]) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        loaded = await api.post("/api/v1/process", headers={**auth, "x-request-id": "req-loader"},
                                json={"prompt": "hi", "max_tokens": 2})
        assert loaded.status == 200 and loaded.headers["x-request-id"] == "req-loader"
        worker = api.server.app[INFERENCE].pool.workers()["tiny-llama"]
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        for _ in range(200):
            if any(line["event"] == "worker_died" for line in logs):
                break
            await asyncio.sleep(0.02)
    died = [line for line in logs if line["event"] == "worker_died"]
    assert died, [line["event"] for line in logs]
    assert died[0].get("request_id") != "req-loader"
    assert any(line.get("request_id") == "req-loader" for line in logs)  # the request's own lines
