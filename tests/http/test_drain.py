"""The drain step of shutdown on the real app (the long-stream case runs in tests/e2e)."""

from __future__ import annotations

from typing import Any

from llamahomed.daemon import _drain


async def test_after_the_drain_new_generations_get_503_shutting_down(
        api: Any, auth: dict[str, str]) -> None:
    assert (await api.post("/api/v1/process", headers=auth,
                           json={"prompt": "hi", "max_tokens": 2})).status == 200
    await _drain(api.server.app)
    refused = await api.post("/api/v1/stream", headers=auth, json={"prompt": "hi", "max_tokens": 2})
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "shutting_down"
    assert (await api.get("/health")).status == 200  # only new generations are refused

