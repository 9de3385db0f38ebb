"""The Python SDK's WebSocket client (llamahome.websocket) against the real app and tiny model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llamahome.error import AuthenticationError, ModelNotFoundError
from llamahome.websocket import WebSocketClient

from llamahomed.http.keys import INFERENCE
from tests.fixtures.observe import finish_reasons
from tests.fixtures.tiny_gguf import write_tiny_llama

GREEDY = {"temperature": 0, "max_tokens": 12}


def connect(api: Any, auth: dict[str, str]) -> WebSocketClient:
    return WebSocketClient(api_key=auth["Authorization"].removeprefix("Bearer "),
                           endpoint=str(api.make_url("")))


async def test_concurrent_requests_share_one_socket(api: Any, auth: dict[str, str]) -> None:
    prompts = ["the cat", "a dog and a", "hello world"]
    expected = []
    for prompt in prompts:
        response = await api.post("/api/v1/process", headers=auth, json={"prompt": prompt, **GREEDY})
        expected.append((await response.json())["text"])
    async with connect(api, auth) as ws:
        results = await asyncio.gather(*(ws.process(p, **GREEDY) for p in prompts))
        stream = ws.stream("the cat", **GREEDY)
        chunks = [chunk async for chunk in stream]
    assert [r.text for r in results] == expected
    assert all(r.usage.completion_tokens == 12 and r.model == "tiny-llama" for r in results)
    assert "".join(c.text for c in chunks) == expected[0]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert stream.final is not None and stream.final["finish_reason"] == "length"


async def test_errors_are_the_sdks_classes(api: Any, auth: dict[str, str]) -> None:
    async with connect(api, auth) as ws:
        with pytest.raises(ModelNotFoundError):
            await ws.process("x", model="no-such-model")
        assert (await ws.process("hi", max_tokens=2)).usage.completion_tokens == 2
    with pytest.raises(AuthenticationError):
        async with WebSocketClient(api_key="nope", endpoint=str(api.make_url(""))):
            pass


async def test_leaving_a_stream_early_cancels_it_on_the_daemon(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    write_tiny_llama(settings.models_path / "tiny-long.gguf",
                     n_ctx=4096, name="tiny-long")
    async with connect(api, auth) as ws:
        async for chunk in ws.stream("the cat", model="tiny-long", temperature=0, max_tokens=4000):
            if chunk.index == 2:
                break
        worker = api.server.app[INFERENCE].pool.workers()["tiny-long"]
        for _ in range(100):
            await asyncio.sleep(0.05)
            if worker.in_flight == 0:
                break
        assert finish_reasons(api.server.app, "tiny-long") == {"cancelled": 1}
        assert (await ws.process("hi", model="tiny-long", max_tokens=2)).usage.completion_tokens == 2
