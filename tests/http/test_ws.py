"""GET /api/v1/ws through the real app, real workers and real llama.cpp on the tiny model."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import aiohttp
import pytest

from llamahomed.http.keys import INFERENCE, METRICS
from llamahomed.http.handlers.ws import TicketBook
from llamahomed.core.errors import AuthenticationFailed
from tests.fixtures.observe import finish_reasons, generated_tokens
from tests.fixtures.tiny_gguf import write_tiny_llama

GREEDY = {"temperature": 0, "max_tokens": 12}


async def process(api: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/process", json=body, headers=auth)
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def receive(ws: Any, timeout: float = 30) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def run_until_done(ws: Any, ids: set[Any]) -> dict[Any, list[dict[str, Any]]]:
    """Messages per request id until every id in ``ids`` has its done or error."""
    got: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    open_ids = set(ids)
    while open_ids:
        message = await receive(ws)
        got[message["id"]].append(message)
        if message.get("done") or "error" in message:
            open_ids.discard(message["id"])
    return got


def long_model(settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")


async def test_a_request_streams_chunks_then_done_with_the_process_text(
        api: Any, auth: dict[str, str]) -> None:
    expected = await process(api, auth, prompt="the cat sat on", **GREEDY)
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": "a1", "prompt": "the cat sat on", **GREEDY})
        messages = (await run_until_done(ws, {"a1"}))["a1"]
    *chunks, final = messages
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(set(c) == {"id", "chunk", "index"} for c in chunks)
    assert "".join(c["chunk"] for c in chunks) == expected["text"]
    assert final["done"] is True and final["id"] == "a1"
    assert final["usage"] == expected["usage"]
    assert final["finish_reason"] == expected["finish_reason"]
    assert final["model"] == expected["model"]


async def test_several_requests_in_flight_on_one_socket_do_not_mix(
        api: Any, auth: dict[str, str]) -> None:
    prompts = {1: "the cat", "two": "a dog and a", 3: "hello world"}
    expected = {rid: (await process(api, auth, prompt=p, **GREEDY))["text"]
                for rid, p in prompts.items()}
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        for rid, prompt in prompts.items():
            await ws.send_json({"id": rid, "prompt": prompt, **GREEDY})
        got = await run_until_done(ws, set(prompts))
    for rid, messages in got.items():
        assert messages[-1]["done"] is True
        assert "".join(m.get("chunk", "") for m in messages) == expected[rid]


async def test_cancel_stops_one_request_and_leaves_the_others_running(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": "long", "model": "tiny-long", "prompt": "the cat",
                            "temperature": 0, "max_tokens": 4000})
        seen = 0
        while seen < 3:
            message = await receive(ws)
            assert message["id"] == "long" and "chunk" in message
            seen += 1
        await ws.send_json({"id": "short", "model": "tiny-long", "prompt": "a dog", **GREEDY})
        await ws.send_json({"cancel": "long"})
        got = await run_until_done(ws, {"long", "short"})
    final = got["long"][-1]
    assert final["done"] is True and final["finish_reason"] == "cancelled"
    assert seen <= final["usage"]["completion_tokens"] < 4000
    assert got["short"][-1]["done"] is True
    assert got["short"][-1]["usage"]["completion_tokens"] == 12
    assert finish_reasons(api.server.app, "tiny-long")["cancelled"] == 1


async def test_closing_the_socket_cancels_every_sequence_and_no_token_follows(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)
    ws = await api.ws_connect("/api/v1/ws", headers=auth)
    for rid in ("x", "y"):
        await ws.send_json({"id": rid, "model": "tiny-long", "prompt": f"the {rid} cat",
                            "temperature": 0, "max_tokens": 4000})
    counts: dict[str, int] = defaultdict(int)
    while min(counts["x"], counts["y"]) < 3:
        message = await receive(ws)
        counts[message["id"]] += 1
    worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
    assert worker.in_flight == 2
    await ws.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if worker.in_flight == 0:
            break
    assert worker.in_flight == 0
    assert finish_reasons(api.server.app, "tiny-long") == {"cancelled": 2}
    assert generated_tokens(api.server.app, "tiny-long") < 2 * 4000
    generated = worker.tokens_generated
    await asyncio.sleep(0.5)
    assert worker.tokens_generated == generated  # nothing decoded after the cancel
    follow = await process(api, auth, model="tiny-long", prompt="hi", max_tokens=2)
    assert follow["usage"]["completion_tokens"] == 2


async def test_a_cancel_while_waiting_for_a_slot_ends_the_request(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    long_model(settings)  # request 1 runs long enough to still hold the one slot at the cancel
    await api.post("/api/v1/config", headers=auth, json={"system_settings": {"n_slots": 1}})
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": 1, "model": "tiny-long", "prompt": "the cat", "temperature": 0,
                            "max_tokens": 3000})
        assert "chunk" in await receive(ws)
        await ws.send_json({"id": 2, "model": "tiny-long", "prompt": "a dog",
                            **GREEDY})  # queued behind request 1
        await asyncio.sleep(0.05)
        await ws.send_json({"cancel": 2})
        await ws.send_json({"cancel": 1})
        got = await run_until_done(ws, {1, 2})
    assert got[2] == [{"id": 2, "done": True, "finish_reason": "cancelled",
                       "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}]
    assert got[1][-1]["finish_reason"] == "cancelled"


@pytest.mark.parametrize(("message", "reply_id", "code"), [
    ("not json", None, "invalid_request"),
    ("[1, 2]", None, "invalid_request"),
    (json.dumps({"prompt": "no id"}), None, "invalid_request"),
    (json.dumps({"id": True, "prompt": "bool id"}), None, "invalid_request"),
    (json.dumps({"id": "v", "prompt": "x", "temperature": -1}), "v", "validation_error"),
    (json.dumps({"id": "u", "prompt": "x", "bogus": 1}), "u", "validation_error"),
    (json.dumps({"id": "m", "prompt": "x", "model": "no-such"}), "m", "model_not_found"),
    (json.dumps({"id": "c", "prompt": "the cat " * 400}), "c", "context_length_exceeded"),
    (json.dumps({"cancel": "nothing"}), "nothing", "invalid_request"),
])
async def test_a_bad_message_gets_an_error_for_its_id_and_the_socket_stays_open(
        api: Any, auth: dict[str, str], message: str, reply_id: Any, code: str) -> None:
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_str(message)
        reply = await receive(ws)
        assert reply["id"] == reply_id
        assert set(reply["error"]) == {"code", "message", "details"}
        assert reply["error"]["code"] == code
        await ws.send_json({"id": "after", "prompt": "hi", "max_tokens": 2})
        assert (await run_until_done(ws, {"after"}))["after"][-1]["done"] is True


async def test_a_duplicate_id_in_flight_is_refused(api: Any, auth: dict[str, str]) -> None:
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": "d", "prompt": "the cat", "temperature": 0, "max_tokens": 40})
        await ws.send_json({"id": "d", "prompt": "again", "max_tokens": 2})
        messages = (await run_until_done(ws, {"d"}))["d"]
        errors = [m for m in messages if "error" in m]
        if errors:  # the duplicate arrived while "d" ran: refused, and "d" still finishes
            assert "already in flight" in errors[0]["error"]["message"]
            rest = (await run_until_done(ws, {"d"}))["d"]
            assert rest[-1]["done"] is True
        else:
            pytest.fail("the duplicate id was accepted")


async def test_the_upgrade_needs_a_token(api: Any) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.ws_connect("/api/v1/ws")
    assert info.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.ws_connect("/api/v1/ws", headers={"Authorization": "Bearer nope"})
    assert info.value.status == 401


async def test_a_plain_get_is_a_clear_400(api: Any, auth: dict[str, str]) -> None:
    response = await api.get("/api/v1/ws", headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_a_foreign_origin_is_refused_before_the_upgrade(api: Any, auth: dict[str, str]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.ws_connect("/api/v1/ws", headers={**auth, "Origin": "http://evil.example"})
    assert info.value.status == 403
    response = await api.get("/api/v1/ws", headers={**auth, "Origin": "http://evil.example"})
    assert (await response.json())["error"]["code"] == "origin_not_allowed"


async def test_an_allowed_origin_connects(aiohttp_client: Any, make_settings: Any) -> None:
    from llamahomed.http.app import create_app

    settings = make_settings(allowed_origins=["http://localhost:3000"])
    client = await aiohttp_client(create_app(settings))
    token = settings.admin_token_file.read_text().strip()
    async with client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}",
                                                        "Origin": "http://localhost:3000"}) as ws:
        await ws.send_json({"id": 1, "prompt": "hi", "max_tokens": 2})
        assert (await run_until_done(ws, {1}))[1][-1]["done"] is True


async def test_a_browser_ticket_works_once(api: Any, auth: dict[str, str]) -> None:
    response = await api.post("/api/v1/ws/ticket", headers=auth)
    assert response.status == 200
    issued = await response.json()
    assert 0 < issued["expires_in"] <= 30
    async with api.ws_connect(f"/api/v1/ws?ticket={issued['ticket']}") as ws:
        await ws.send_json({"id": 1, "prompt": "hi", "max_tokens": 2})
        assert (await run_until_done(ws, {1}))[1][-1]["done"] is True
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.ws_connect(f"/api/v1/ws?ticket={issued['ticket']}")
    assert info.value.status == 401
    ticketless = await api.post("/api/v1/ws/ticket")
    assert ticketless.status == 401


def test_a_ticket_expires() -> None:
    from llamahome.auth import TokenClaims

    now = [1000.0]
    book = TicketBook(ttl=30, clock=lambda: now[0])
    claims = TokenClaims("u", "j", 0.0, None, ("inference",), "basic")
    fresh, old = book.issue(claims), book.issue(claims)
    assert book.redeem(fresh) == claims
    now[0] += 30.5
    with pytest.raises(AuthenticationFailed):
        book.redeem(old)
    with pytest.raises(AuthenticationFailed):
        book.redeem("never-issued")


async def test_each_request_on_the_socket_is_charged_to_the_rate_limit(
        aiohttp_client: Any, make_settings: Any) -> None:
    """Burst 2 for the admin token's tier: the upgrade takes one (an upgrade is a request), the
    first message the other, the second is refused with the 429 envelope and the socket stays
    open."""
    from llamahomed.http.app import create_app

    settings = make_settings(rate_limits={"tiers": {"basic": {}, "enterprise": {"rpm": 1, "burst": 2}}})
    api = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": 1, "prompt": "the cat sat on", **GREEDY})
        first = await run_until_done(ws, {1})
        await ws.send_json({"id": 2, "prompt": "the cat sat on", **GREEDY})
        second = await run_until_done(ws, {2})
    assert first[1][-1]["done"] is True
    error = second[2][-1]["error"]
    assert error["code"] == "rate_limit_exceeded" and error["details"]["retry_after"] >= 1
    assert api.app[METRICS]._rate_limited._value.get() == 1  # noqa: SLF001 - the counter itself
