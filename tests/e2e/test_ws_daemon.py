"""The WebSocket on the real ``llamahomed start`` process (its runner cancels handlers on disconnect)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.fixtures.daemon import RunningDaemon

pytestmark = pytest.mark.e2e


async def test_closing_the_socket_stops_generation_on_the_real_daemon(
        tiny_daemon: RunningDaemon) -> None:
    base = tiny_daemon.url
    async with aiohttp.ClientSession(headers=tiny_daemon.headers) as http:
        async def running() -> int:
            async with http.get(f"{base}/api/v1/models/tiny-long") as response:
                runtime = (await response.json())["runtime"]
                return int(runtime["running"]) if runtime else 0

        async with http.post(f"{base}/api/v1/process", json={  # load the model first
                "model": "tiny-long", "prompt": "hi", "max_tokens": 2}) as r:
            assert r.status == 200
        started = time.perf_counter()
        async with http.post(f"{base}/api/v1/process", json={
                "model": "tiny-long", "prompt": "a dog", "temperature": 0, "max_tokens": 200}) as r:
            assert (await r.json())["usage"]["completion_tokens"] == 200
        seconds_per_token = (time.perf_counter() - started) / 200

        ws = await http.ws_connect(f"{base}/api/v1/ws")
        await ws.send_json({"id": 1, "model": "tiny-long", "prompt": "the cat",
                            "temperature": 0, "max_tokens": 4000})
        for _ in range(3):
            assert "chunk" in json.loads((await ws.receive(timeout=30)).data)
        assert await running() == 1
        await ws.close()
        closed = time.perf_counter()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await running() == 0:
                break
        assert await running() == 0
        # Stopped by the close, not by running out: 4000 tokens would take far longer.
        assert time.perf_counter() - closed < 0.5 * 4000 * seconds_per_token
    assert tiny_daemon.stop() == 0, tiny_daemon.output()
    assert "Traceback" not in tiny_daemon.output()
