"""Workers load on first use and unload after keep-alive; the app cleans them up on exit."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from llamahomed.http.keys import INFERENCE
from tests.fixtures.observe import finish_reasons, generated_tokens


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_model_loads_on_first_use_and_unloads_after_keep_alive(
        api: Any, auth: dict[str, str]) -> None:
    pool = api.server.app[INFERENCE].pool
    assert pool.workers() == {}
    await api.post("/api/v1/config", headers=auth, json={"system_settings": {"keep_alive": 0.3}})
    response = await api.post("/api/v1/process", headers=auth, json={"prompt": "hi", "max_tokens": 2})
    assert response.status == 200
    (worker,) = pool.workers().values()
    pid = worker.pid
    assert _alive(pid)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if not pool.workers():
            break
    assert pool.workers() == {}
    health = await (await api.get("/health", headers=auth)).json()
    assert health["models_loaded"] == []
    assert not _alive(pid)


async def test_a_client_that_disconnects_cancels_its_sequence(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    from tests.fixtures.tiny_gguf import write_tiny_llama

    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    pool = api.server.app[INFERENCE].pool
    response = await api.post("/api/v1/stream", headers=auth,
                              json={"model": "tiny-long", "prompt": "the cat", "max_tokens": 4000,
                                    "temperature": 0})
    received = 0
    while received < 5:
        line = await response.content.readline()
        assert b"chunk" in line
        received += 1
    worker = pool.workers()["tiny-long"]
    assert worker.in_flight == 1
    response.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if worker.in_flight == 0:
            break
    assert worker.in_flight == 0
    assert finish_reasons(api.server.app, "tiny-long") == {"cancelled": 1}
    assert received <= generated_tokens(api.server.app, "tiny-long") < 4000
    # No token is generated after the cancel: the worker's counter stays where it was.
    generated = worker.tokens_generated
    await asyncio.sleep(0.5)
    assert worker.tokens_generated == generated
    follow = await api.post("/api/v1/process", headers=auth,
                            json={"model": "tiny-long", "prompt": "hi", "max_tokens": 2})
    assert follow.status == 200
    assert sum(finish_reasons(api.server.app, "tiny-long").values()) == 2
