"""PooledClient: connections kept across calls, at most pool_size at once, closed when idle."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from llamahome.client import PooledClient

OK = {"text": "ok", "usage": {}, "model": "m", "created": "now"}


class Watch:
    def __init__(self) -> None:
        self.peers: list[Any] = []
        self.running = 0
        self.most = 0


async def start(watch: Watch, delay: float = 0.0) -> TestServer:
    async def process(request: web.Request) -> web.Response:
        assert request.transport is not None
        watch.peers.append(request.transport.get_extra_info("peername"))
        watch.running += 1
        watch.most = max(watch.most, watch.running)
        try:
            await asyncio.sleep(delay)
        finally:
            watch.running -= 1
        return web.json_response(OK)

    app = web.Application()
    app.router.add_post("/api/v1/process", process)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_connections_are_reused_across_calls_without_a_with_block() -> None:
    watch = Watch()
    server = await start(watch)
    client = PooledClient(pool_size=10, max_retries=3, api_key="k",
                          endpoint=str(server.make_url("")))
    try:
        for _ in range(4):
            await client.process_prompt("x")
        assert len(watch.peers) == 4 and len(set(watch.peers)) == 1
    finally:
        await client.close()
        await server.close()


async def test_no_more_than_pool_size_requests_at_once() -> None:
    watch = Watch()
    server = await start(watch, delay=0.1)
    client = PooledClient(pool_size=2, api_key="k", endpoint=str(server.make_url("")))
    try:
        results = await asyncio.gather(*(client.process_prompt("x") for _ in range(6)))
        assert [r.text for r in results] == ["ok"] * 6
        assert watch.most == 2 and len(set(watch.peers)) == 2
    finally:
        await client.close()
        await server.close()


async def test_an_idle_pool_closes_itself_and_reopens_on_use() -> None:
    watch = Watch()
    server = await start(watch)
    client = PooledClient(pool_size=2, api_key="k", endpoint=str(server.make_url("")),
                          idle_timeout=0.1)
    try:
        await client.process_prompt("x")
        session = client._transport._shared
        assert session is not None and not session.closed
        await asyncio.sleep(0.4)
        assert session.closed and client._transport._shared is None
        await client.process_prompt("x")
        assert len(set(watch.peers)) == 2  # a new connection after the pool closed
    finally:
        await client.close()
        await server.close()


SCRIPT = """
import asyncio, sys
from aiohttp import web
from llamahome.client import PooledClient

async def serve():
    app = web.Application()
    async def process(request):
        return web.json_response({"text": "ok", "usage": {}, "model": "m", "created": "now"})
    app.router.add_post("/api/v1/process", process)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]

async def main(client=None):
    runner, port = await serve()
    client = client or PooledClient(api_key="k", endpoint=f"http://127.0.0.1:{port}")
    print((await client.process_prompt("x")).text)
    await runner.cleanup()
    return client

client = asyncio.run(main())          # never closed: the loop's shutdown closes the pool
asyncio.run(main())
"""


def test_an_unclosed_pool_leaves_no_warning_when_the_loop_ends(tmp_path: Path) -> None:
    env = {**os.environ, "LLAMAHOME_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-W", "error", "-X", "dev", "-c", SCRIPT],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "ok"]
    assert "Unclosed" not in result.stderr and "Warning" not in result.stderr
