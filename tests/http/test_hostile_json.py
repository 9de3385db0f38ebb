"""Issue 12.7: JSON that is nested absurdly deep or is not Unicode gets a clear 400, never a 500,
and a WebSocket stays open after it."""

from __future__ import annotations

from typing import Any

import pytest

DEEP = "[" * 1000 + "]" * 1000                       # 2 KB that Python's json turns into a RecursionError
DEEP_OBJECT = '{"prompt": ' + '{"a": ' * 1000 + "1" + "}" * 1001
SURROGATE = '{"prompt": "\\ud800 alone", "max_tokens": 2}'
JSON_ROUTES = ["/api/v1/process", "/api/v1/stream", "/api/v1/batch", "/api/v1/config",
               "/api/v1/models/pull", "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
               "/v1/responses/input_tokens"]


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, SURROGATE], ids=["array", "object", "surrogate"])
async def test_every_json_route_answers_hostile_json_with_a_400(
        api: Any, auth: dict[str, str], body: str) -> None:
    for path in JSON_ROUTES:
        response = await api.post(path, data=body.encode(),
                                  headers={**auth, "Content-Type": "application/json"})
        assert response.status == 400, (path, response.status, await response.text())
        error = (await response.json())["error"]
        assert error["code"] == "invalid_request", (path, error)
        assert "deep" in error["message"] or "surrogate" in error["message"], error


async def test_a_websocket_answers_hostile_messages_and_stays_open(
        api: Any, auth: dict[str, str]) -> None:
    ws = await api.ws_connect("/api/v1/ws", headers=auth)
    try:
        for raw in (DEEP, DEEP_OBJECT, '{"id": "\\ud800", "prompt": "hi"}'):
            await ws.send_str(raw)
            reply = await ws.receive_json(timeout=10)
            assert reply["id"] is None and reply["error"]["code"] == "invalid_request", reply
        await ws.send_json({"id": "after", "prompt": "hi", "max_tokens": 2, "temperature": 0})
        while True:
            message = await ws.receive_json(timeout=30)
            if message.get("done") or message.get("error"):
                break
        assert message["id"] == "after" and message["done"] is True, message
    finally:
        await ws.close()
