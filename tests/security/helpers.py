"""Helpers for the security suite: tokens made with the daemon's own keys, envelopes, WebSocket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue(settings: Any, user: str = "alice", *, scopes: Sequence[str] = ("inference",),
          tier: str = "basic", expires_in: float | None = 3600) -> str:
    """A token issued through the daemon's Authority (recorded in its token store)."""
    from llamahomed.core.authority import Authority

    authority = Authority.from_settings(settings)
    try:
        return authority.issue(user, expires_in, scopes, tier)
    finally:
        authority.close()


def assert_envelope(data: Any, code: str) -> dict[str, Any]:
    """The error envelope with this code; returns its inner object."""
    assert set(data) == {"error"}, data
    error: dict[str, Any] = data["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def handshake_request(app: web.Application, origin: str | None, path: str = "/api/v1/ws",
                      host: str = "127.0.0.1:8910") -> web.Request:
    """A WebSocket upgrade request as a browser sends it, for testing check_origin (and, once
    /api/v1/ws exists, for handshakes: see test_surface.py)."""
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    if origin is not None:
        headers["Origin"] = origin
    return make_mocked_request("GET", path, headers=headers, app=app)
