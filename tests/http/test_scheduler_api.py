"""Two models through the real app on a socket, on a (simulated) machine with memory for one:
a request for the second waits while the first is busy, and /api/v1/status, /api/v1/models and
``llamahomed status`` show what is loaded, until when, and what waits; keep_alive on the
native API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from llamahomed.commands.status import render
from llamahomed.core.resources import simulated_machine
from llamahomed.http.keys import INFERENCE
from tests.conftest import TINY_MODEL_ID
from tests.fixtures.tiny_gguf import write_tiny_llama

GiB = 2**30
OTHER = "tiny-b"
GREEDY = {"temperature": 0, "max_tokens": 2}


@pytest.fixture
def one_model_machine(api: Any, models_dir: Path) -> Any:
    """A second tiny model in the store; the app's machine holds one of them, not two."""
    write_tiny_llama(models_dir / f"{OTHER}.gguf", name=OTHER, seed=7)
    service = api.server.app[INFERENCE]
    need = max(service.plan(service.candidates(m), simulated_machine(ram=64 * GiB, cores=1))
               .memory_required or 0 for m in (TINY_MODEL_ID, OTHER))
    reserve = service.config.settings.system_settings.ram_reserve_bytes
    machine = simulated_machine(ram=reserve + int(need * 1.5), cores=1)
    service.read_machine = lambda: machine
    return service


def _seconds_until(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - time.time()


async def _status(api: Any, auth: dict[str, str]) -> dict[str, Any]:
    response = await api.get("/api/v1/status", headers=auth)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_a_request_for_a_second_model_waits_in_status_then_loads_it(
        api: Any, auth: dict[str, str], one_model_machine: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    first = {"prompt": "the cat", "model": TINY_MODEL_ID, **GREEDY}
    assert (await api.post("/api/v1/process", json=first, headers=auth)).status == 200
    pid = one_model_machine.pool.workers()[TINY_MODEL_ID].pid
    os.kill(pid, signal.SIGSTOP)  # the first model's worker pauses with a request in flight
    try:
        busy = asyncio.create_task(api.post("/api/v1/process", json=first, headers=auth))
        worker = one_model_machine.pool.workers()[TINY_MODEL_ID]
        for _ in range(200):
            if not worker.idle:
                break
            await asyncio.sleep(0.02)
        second = asyncio.create_task(api.post(
            "/api/v1/process", json={"prompt": "a dog", "model": OTHER, "keep_alive": "5m",
                                     **GREEDY}, headers=auth))
        for _ in range(200):
            status = await _status(api, auth)
            if status["scheduler"]["waiting"]:
                break
            await asyncio.sleep(0.05)
        (waiter,) = status["scheduler"]["waiting"]
        assert waiter["model"] == OTHER and waiter["reason"] == "memory"
        assert waiter["waiting_for"] == [TINY_MODEL_ID] and waiter["waited_s"] >= 0
        (model,) = status["models"]
        assert model["id"] == TINY_MODEL_ID and model["state"] == "running"
        assert model["expires_at"] is None and model["memory_held"]["ram_bytes"] > 0
        assert status["scheduler"]["max_loaded_models"] == 3  # no GPU: Ollama's 3
        listing = await (await api.get("/api/v1/models", headers=auth)).json()
        assert [w["model"] for w in listing["waiting"]] == [OTHER]
        render(status, "http://test")
        assert f"waiting to load {OTHER}" in capsys.readouterr().out
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await asyncio.wait_for(busy, 30)).status == 200
    answer = await asyncio.wait_for(second, 30)
    assert answer.status == 200, await answer.text()
    status = await _status(api, auth)
    (model,) = status["models"]
    assert model["id"] == OTHER and model["state"] == "idle" and model["keep_alive_s"] == 300
    assert 290 < _seconds_until(model["expires_at"]) <= 300
    assert _seconds_until(model["loaded_at"]) <= 0 and not status["scheduler"]["waiting"]
    listing = await (await api.get("/api/v1/models", headers=auth)).json()
    shown = {m["id"]: m for m in listing["models"]}
    assert shown[OTHER]["loaded"] and shown[OTHER]["expires_at"] == model["expires_at"]
    assert not shown[TINY_MODEL_ID]["loaded"]
    render(status, "http://test")
    assert OTHER in capsys.readouterr().out


async def test_keep_alive_is_a_native_request_option_and_bad_ones_are_refused(
        api: Any, auth: dict[str, str], make_settings: Callable[..., Any]) -> None:
    body = {"prompt": "hi", **GREEDY}
    bad = await api.post("/api/v1/process", json={**body, "keep_alive": "soon"}, headers=auth)
    error = (await bad.json())["error"]
    assert bad.status == 422 and error["details"]["errors"][0]["field"] == "keep_alive"
    assert (await api.post("/api/v1/process", json={**body, "keep_alive": -1},
                           headers=auth)).status == 200
    (model,) = (await _status(api, auth))["models"]
    assert model["keep_alive_s"] == -1 and model["expires_at"] is None
    assert (await api.post("/api/v1/stream", json={**body, "keep_alive": 0},
                           headers=auth)).status == 200
    pool = api.server.app[INFERENCE].pool
    for _ in range(100):
        if not pool.workers():
            break
        await asyncio.sleep(0.05)
    assert pool.workers() == {}  # keep_alive 0: unloaded once idle


async def test_past_load_wait_timeout_the_api_answers_507_with_retry_after_and_the_holder(
        api: Any, auth: dict[str, str], one_model_machine: Any) -> None:
    config = {"system_settings": {"load_wait_timeout": 0.3}}
    assert (await api.post("/api/v1/config", json=config, headers=auth)).status == 200
    first = {"prompt": "the cat", "model": TINY_MODEL_ID, **GREEDY}
    assert (await api.post("/api/v1/process", json=first, headers=auth)).status == 200
    worker = one_model_machine.pool.workers()[TINY_MODEL_ID]
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        busy = asyncio.create_task(api.post("/api/v1/process", json=first, headers=auth))
        for _ in range(200):
            if not worker.idle:
                break
            await asyncio.sleep(0.02)
        refused = await api.post("/api/v1/process", headers=auth,
                                 json={"prompt": "a dog", "model": OTHER, **GREEDY})
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert (await asyncio.wait_for(busy, 30)).status == 200
    error = (await refused.json())["error"]
    assert refused.status == 507 and error["code"] == "model_too_large"
    assert refused.headers["Retry-After"] == "5"
    assert [h["model"] for h in error["details"]["held_by"]] == [TINY_MODEL_ID]
    assert TINY_MODEL_ID in error["message"] and error["details"]["reason"] == "memory"
