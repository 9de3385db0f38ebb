"""Issue 12.5: one stream cap and one rate-limit charge for every dialect and transport, and a
cap on WebSockets per token."""

from __future__ import annotations

import json
from typing import Any

from llamahomed.http.app import create_app
from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.security.helpers import bearer, issue

LONG = {"model": "tiny-long", "temperature": 0, "max_tokens": 2000}


def long_model(settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                                                   n_ctx=4096, name="tiny-long")


async def test_one_stream_cap_holds_for_ndjson_sse_and_websocket_generations(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(system_settings={"max_streams_per_token": 1})
    long_model(settings)
    api = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings))
    held = await api.post("/api/v1/stream", headers=user, json={**LONG, "prompt": "the cat"})
    assert held.status == 200 and b"chunk" in await held.content.readline()
    for path, body in (("/v1/completions", {"prompt": "a dog", "stream": True}),
                       ("/api/v1/stream", {"prompt": "a dog"})):
        refused = await api.post(path, headers=user, json={**LONG, **body})
        assert refused.status == 429, (path, await refused.text())
        assert (await refused.json())["error"]["code"] == "too_many_streams"
    ws = await api.ws_connect("/api/v1/ws", headers=user)
    await ws.send_json({"id": "w", **LONG, "prompt": "a bird"})
    reply = await ws.receive_json(timeout=30)
    assert reply["id"] == "w" and reply["error"]["code"] == "too_many_streams", reply
    await ws.close()
    held.close()
    # the slot frees when the held stream ends: the same user streams again
    for _ in range(100):
        again = await api.post("/v1/completions", headers=user,
                               json={"model": "tiny-long", "prompt": "x", "max_tokens": 2,
                                     "stream": True})
        if again.status == 200:
            break
        await again.release()
    assert again.status == 200
    assert b"[DONE]" in await again.read()


async def test_websocket_upgrades_are_charged_to_the_rate_limit(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(rate_limits={"tiers": {"basic": {"rpm": 6, "burst": 2}}})
    api = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings))
    sockets = [await api.ws_connect("/api/v1/ws", headers=user) for _ in range(2)]
    refused = await api.get("/api/v1/ws", headers={**user, "Connection": "Upgrade",
                                                   "Upgrade": "websocket",
                                                   "Sec-WebSocket-Version": "13",
                                                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    for ws in sockets:
        await ws.close()


async def test_a_token_may_hold_only_so_many_websockets(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(system_settings={"max_sockets_per_token": 2})
    api = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings))
    sockets = [await api.ws_connect("/api/v1/ws", headers=user) for _ in range(2)]
    upgrade = {**user, "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    refused = await api.get("/api/v1/ws", headers=upgrade)
    assert refused.status == 429
    body = json.loads(await refused.text())
    assert body["error"]["code"] == "too_many_streams" and "WebSockets" in body["error"]["message"]
    await sockets[0].close()
    third = await api.ws_connect("/api/v1/ws", headers=user)  # a closed socket frees its place
    await third.close()
    await sockets[1].close()
