"""Issue 12.6: one user cannot take a model's whole queue; a batch costs one request per item."""

from __future__ import annotations

import asyncio
from typing import Any

from llamahomed.engine.admission import Admission
from llamahomed.http.app import create_app
from llamahomed.http.keys import INFERENCE
from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.security.helpers import bearer, issue


async def test_waiting_owners_take_turns_for_free_slots() -> None:
    admission = Admission(slots=1, max_queue=10, timeout=5, owner_share=1.0)
    await admission.enter(0, "heavy")
    order: list[str] = []

    async def wait(ticket: int, owner: str) -> None:
        await admission.enter(ticket, owner)
        order.append(owner)

    tasks = [asyncio.ensure_future(wait(i, "heavy")) for i in range(1, 4)]
    await asyncio.sleep(0.02)
    tasks.append(asyncio.ensure_future(wait(9, "light")))
    await asyncio.sleep(0.02)
    for ticket in (0, 1, 9, 2):
        admission.leave(ticket)
        await asyncio.sleep(0.02)  # the woken waiter records its start
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["heavy", "light", "heavy", "heavy"]  # light went second, not last


async def test_one_owner_holds_at_most_its_share_of_the_queue() -> None:
    admission = Admission(slots=1, max_queue=4, timeout=5, owner_share=0.5)
    await admission.enter(0, "heavy")
    waiting = [asyncio.ensure_future(admission.enter(i, "heavy")) for i in (1, 2)]
    await asyncio.sleep(0.02)
    refused = asyncio.ensure_future(admission.enter(3, "heavy"))
    await asyncio.sleep(0.02)
    assert refused.done() and "share of the queue" in str(refused.exception())
    other = asyncio.ensure_future(admission.enter(4, "light"))
    await asyncio.sleep(0.02)
    assert not other.done() and admission.waiting == 3
    for task in [*waiting, other]:
        task.cancel()
    await asyncio.gather(*waiting, other, return_exceptions=True)


async def test_a_batch_flood_slows_its_sender_before_anyone_else_is_refused(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(
        system_settings={"n_slots": 2, "max_queue": 8, "queue_share_per_token": 0.5},
        rate_limits={"tiers": {"basic": {"rpm": 600, "burst": 50}}})
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                                                   n_ctx=8192, name="tiny-long")
    api = await aiohttp_client(create_app(settings))
    heavy, light = bearer(issue(settings, "heavy")), bearer(issue(settings, "light"))
    warm = await api.post("/api/v1/process", headers=light,
                          json={"model": "tiny-long", "prompt": "hi", "max_tokens": 1})
    assert warm.status == 200
    flood = asyncio.ensure_future(api.post("/api/v1/batch", headers=heavy, json={
        "model": "tiny-long", "prompts": [f"story {i}" for i in range(10)],
        "max_tokens": 400, "temperature": 0}))
    worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
    for _ in range(200):
        if worker.admission.running == 2:
            break
        await asyncio.sleep(0.02)
    served = await api.post("/api/v1/process", headers=light,
                            json={"model": "tiny-long", "prompt": "me too", "max_tokens": 2})
    assert served.status == 200, await served.text()
    assert not flood.done()  # the light user was served while the flood still ran
    results = (await (await flood).json())["results"]
    busy = [r for r in results if "error" in r]
    assert len(results) - len(busy) == 2 + 4  # two slots, then its share of the queue (4 of 8)
    assert {r["error"]["code"] for r in busy} == {"server_busy"}


async def test_a_batch_is_charged_one_request_per_prompt(
        aiohttp_client: Any, make_settings: Any) -> None:
    settings = make_settings(rate_limits={"tiers": {"basic": {"rpm": 6, "burst": 5}}})
    api = await aiohttp_client(create_app(settings))
    user = bearer(issue(settings))
    body = {"prompts": ["a", "b", "c", "d"], "max_tokens": 1}
    assert (await api.post("/api/v1/batch", headers=user, json=body)).status == 200
    again = await api.post("/api/v1/batch", headers=user, json=body)
    assert again.status == 429 and (await again.json())["error"]["code"] == "rate_limit_exceeded"
    big = await api.post("/api/v1/batch", headers=bearer(issue(settings, "other")),
                         json={"prompts": ["x"] * 6, "max_tokens": 1})
    assert big.status == 400 and "smaller" in (await big.json())["error"]["message"]
