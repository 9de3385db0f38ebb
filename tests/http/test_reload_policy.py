"""Issue 12.2: no request reloads a model under everyone else; config changes drain first."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llamahomed.http.keys import INFERENCE
from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.security.helpers import assert_envelope, bearer, issue

LONG = {"model": "tiny-long", "prompt": "the cat", "temperature": 0, "max_tokens": 300}


def long_model(settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                                                   n_ctx=8192, name="tiny-long")


async def start_stream(api: Any, headers: dict[str, str], **body: Any) -> Any:
    """A long NDJSON stream, read until its first chunk (the model is loaded and decoding)."""
    response = await api.post("/api/v1/stream", headers=headers, json={**LONG, **body})
    assert response.status == 200, await response.text()
    assert b"chunk" in await response.content.readline()
    return response


async def finish(response: Any) -> dict[str, Any]:
    last: dict[str, Any] = {}
    async for line in response.content:
        if line.strip():
            last = json.loads(line)
    return last


async def test_an_inference_token_cannot_reload_a_loaded_model_with_a_larger_context(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    user = bearer(issue(settings))
    running = await start_stream(api, user)
    worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
    loaded = worker.config.n_ctx
    served = await api.post("/api/v1/process", headers=user,
                             json={"model": "tiny-long", "prompt": "hi", "max_tokens": 2})
    assert served.status == 200  # what fits the loaded model is served from it
    bigger = await api.post("/v1/completions", headers=user, json={
        "model": "tiny-long", "prompt": "hi", "max_tokens": 2, "n_ctx": loaded * 2})
    assert bigger.status == 403
    error = (await bigger.json())["error"]
    assert error["code"] == "permission_denied" and "admin" in error["message"]
    final = await finish(running)
    assert final.get("done") is True and final["finish_reason"] == "length", final
    assert api.server.app[INFERENCE].pool.workers()["tiny-long"] is worker  # never reloaded


async def test_an_admin_context_change_waits_for_running_requests_then_reloads(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    running = await start_stream(api, bearer(issue(settings)))
    service = api.server.app[INFERENCE]
    before = service.pool.workers()["tiny-long"]
    bigger = asyncio.ensure_future(api.post("/v1/completions", headers=auth, json={
        "model": "tiny-long", "prompt": "hi", "max_tokens": 2,
        "n_ctx": before.config.n_ctx * 2}))
    final = await finish(running)
    assert final.get("done") is True and final["finish_reason"] == "length", final
    response = await bigger
    assert response.status == 200, await response.text()
    after = service.pool.workers()["tiny-long"]
    assert after is not before and after.config.n_ctx == before.config.n_ctx * 2


async def test_a_config_change_drains_the_model_before_it_reloads(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    running = await start_stream(api, bearer(issue(settings)))
    service = api.server.app[INFERENCE]
    before = service.pool.workers()["tiny-long"]
    changed = await api.post("/api/v1/config", headers=auth,
                             json={"system_settings": {"n_slots": 3}})
    assert changed.status == 200
    follow = asyncio.ensure_future(api.post("/api/v1/process", headers=auth, json={
        "model": "tiny-long", "prompt": "hi", "max_tokens": 2}))
    final = await finish(running)
    assert final.get("done") is True and final["finish_reason"] == "length", final
    assert (await follow).status == 200
    after = service.pool.workers()["tiny-long"]
    assert after is not before and after.config.n_slots == 3


async def test_requests_still_running_after_the_drain_timeout_get_a_retryable_503(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    await api.post("/api/v1/config", headers=auth,
                   json={"system_settings": {"reload_drain_timeout": 0.2}})
    running = await start_stream(api, bearer(issue(settings)), max_tokens=8000)
    await api.post("/api/v1/config", headers=auth, json={"system_settings": {"n_slots": 3}})
    follow = await api.post("/api/v1/process", headers=auth,
                            json={"model": "tiny-long", "prompt": "hi", "max_tokens": 2})
    assert follow.status == 200
    final = await finish(running)
    assert_envelope(final, "model_reloading")
