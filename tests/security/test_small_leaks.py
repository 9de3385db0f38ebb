"""Issue 12, smaller items: what the daemon tells strangers, and bounds on request fields."""

from __future__ import annotations

from typing import Any


async def test_the_server_header_names_no_versions(api: Any, auth: dict[str, str]) -> None:
    for response in (await api.get("/health"), await api.get("/api/v1/models", headers=auth),
                     await api.get("/nope")):
        assert response.headers["Server"] == "llamahomed"


async def test_health_tells_loaded_models_only_to_a_valid_token(api: Any, auth: dict[str, str]) -> None:
    await api.post("/api/v1/process", headers=auth, json={"prompt": "hi", "max_tokens": 2})
    anonymous = await (await api.get("/health")).json()
    assert anonymous["status"] == "ok" and "models_loaded" not in anonymous
    forged = await (await api.get("/health", headers={"Authorization": "Bearer nope"})).json()
    assert "models_loaded" not in forged
    known = await (await api.get("/health", headers=auth)).json()
    assert known["models_loaded"] == ["tiny-llama"]


async def test_top_k_has_an_upper_bound(api: Any, auth: dict[str, str]) -> None:
    for path, body in (("/api/v1/process", {"prompt": "hi", "top_k": 10**30}),
                       ("/v1/completions", {"prompt": "hi", "top_k": 10**30})):
        response = await api.post(path, headers=auth, json=body)
        assert response.status in (400, 422), (path, response.status)
