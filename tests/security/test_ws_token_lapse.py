"""Issue 12.1: revocation and expiry reach an open WebSocket; a ticket dies with its token."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType

from llamahomed.core.authority import Authority
from tests.security.helpers import bearer, issue

REQUEST = {"prompt": "hi", "max_tokens": 2, "temperature": 0}


def revoke(settings: Any, token: str) -> None:
    """What ``llamahomed token revoke`` does: another process writes the token store."""
    authority = Authority.from_settings(settings)
    try:
        claims = authority.decode(token)
        authority.store.revoke(claims.token_id, claims.expires_at)
    finally:
        authority.close()


async def answer(ws: Any, request_id: str) -> dict[str, Any]:
    while True:
        message = await ws.receive_json(timeout=30)
        if message.get("id") == request_id and (message.get("done") or message.get("error")):
            return dict(message)


async def test_a_revoked_token_gets_no_more_generations_and_its_socket_closes(
        api: Any, settings: Any) -> None:
    token = issue(settings)
    ws = await api.ws_connect("/api/v1/ws", headers=bearer(token))
    await ws.send_json({"id": "before", **REQUEST})
    assert (await answer(ws, "before"))["done"] is True
    revoke(settings, token)
    await ws.send_json({"id": "after", **REQUEST})
    refused = await answer(ws, "after")
    assert refused["error"]["code"] == "authentication_error"
    assert "revoked" in refused["error"]["message"]
    closing = await ws.receive(timeout=10)
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 1008
    assert (await api.get("/api/v1/models", headers=bearer(token))).status == 401  # as HTTP


async def test_a_ticket_bought_before_the_revocation_does_not_upgrade(api: Any, settings: Any) -> None:
    token = issue(settings)
    response = await api.post("/api/v1/ws/ticket", headers=bearer(token))
    ticket = (await response.json())["ticket"]
    revoke(settings, token)
    refused = await api.get(f"/api/v1/ws?ticket={ticket}",
                            headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                     "Sec-WebSocket-Version": "13",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "authentication_error"


async def test_a_socket_closes_when_its_token_expires(api: Any, settings: Any) -> None:
    token = issue(settings, expires_in=2)
    ws = await api.ws_connect("/api/v1/ws", headers=bearer(token))
    await ws.send_json({"id": "live", **REQUEST})
    assert (await answer(ws, "live"))["done"] is True
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 1008
