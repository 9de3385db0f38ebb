"""SyncClient against the same fake daemon as the async client's tests (a real aiohttp server).

The blocking calls run in a worker thread (``asyncio.to_thread``) so that the server's event
loop keeps serving while they wait. The real daemon is driven by tests/e2e/test_guide_examples.py.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from llamahome import error as errors
from llamahome.client import APIClient, SyncClient, SyncResponseStream
from llamahome.types import ProcessResponse

from tests.client.test_client_unit import FAKE, Fake, make_app

T = TypeVar("T")


async def blocking(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


@pytest.fixture
async def server(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(make_app())


@pytest.fixture
def fake(server: TestServer) -> Fake:
    return server.app[FAKE]


@pytest.fixture
def sync(server: TestServer) -> SyncClient:
    return SyncClient(api_key="sk-test", endpoint=str(server.make_url("")), max_retries=0)


def test_both_clients_have_the_same_methods_with_the_same_signatures() -> None:
    public = {n for n in dir(APIClient) if not n.startswith("_")} - {"create_session", "idle_timeout"}
    assert public <= {n for n in dir(SyncClient) if not n.startswith("_")}
    for name in ("process_prompt", "stream_response", "process_batch", "get_model"):
        assert inspect.signature(getattr(APIClient, name)) == inspect.signature(
            getattr(SyncClient, name))
        assert getattr(APIClient, name).__doc__ == getattr(SyncClient, name).__doc__


async def test_process_sends_the_same_request_as_the_async_client(
    sync: SyncClient, server: TestServer, fake: Fake
) -> None:
    result = await blocking(lambda: sync.process_prompt("Hi", "llama3.3", 10, 0.5, top_k=3,
                                                         stop=("a", "b")))
    async with APIClient(api_key="sk-test", endpoint=str(server.make_url(""))) as client:
        await client.process_prompt("Hi", "llama3.3", 10, 0.5, top_k=3, stop=("a", "b"))
    (m1, p1, h1, b1), (m2, p2, h2, b2) = fake.requests
    assert (m1, p1, b1) == (m2, p2, b2) == ("POST", "/api/v1/process", {
        "prompt": "Hi", "model": "llama3.3", "max_tokens": 10, "temperature": 0.5, "top_k": 3,
        "stop": ["a", "b"]})
    assert h1["Authorization"] == h2["Authorization"] == "Bearer sk-test"
    assert h1["User-Agent"] == h2["User-Agent"]
    assert isinstance(result, ProcessResponse) and result.text == "echo: Hi"
    assert sync.process is not None and result.usage.total_tokens > 0


async def test_stream_batch_models_config_and_health(sync: SyncClient) -> None:
    stream = sync.stream_response("x", chunk_size=4)
    assert isinstance(stream, SyncResponseStream)
    chunks = await blocking(lambda: [c.text for c in stream])
    assert "".join(chunks) == "First part of response" and max(map(len, chunks)) <= 4
    assert stream.usage is not None and stream.usage.completion_tokens == 3
    assert stream.finish_reason == "length" and stream.model == "llama3.3"
    split = await blocking(lambda: [c.text for c in sync.stream_response("x", mode="split")])
    assert split == ["héllo 🦙 wörld", "!"]
    batch = await blocking(lambda: sync.batch_process(["a", "b", "c"], batch_size=2))
    assert [r.text for r in batch] == ["echo: a", "echo: b", "echo: c"]
    models = await blocking(sync.list_models)
    assert models[1].raw["some_future_key"] == [1, 2]
    assert (await blocking(lambda: sync.get_model("org/gemma:Q4_K_M"))).quantization == "Q4_K_M"
    config = await blocking(lambda: sync.update_config({"model_settings": {"max_tokens": 5}}))
    assert config["model_settings"] == {"max_tokens": 5}
    assert (await blocking(sync.get_config))["model_settings"] == {"max_tokens": 5}
    assert (await blocking(sync.health)) == {"status": "ok"}


async def test_errors_map_to_the_same_classes(sync: SyncClient) -> None:
    with pytest.raises(errors.RateLimitError) as info:
        await blocking(lambda: sync.process_prompt("x", fail_code="rate_limit_exceeded",
                                                   fail_status=429, fail_details={"retry_after": 9}))
    assert info.value.retry_after == 9 and info.value.request_id == "req-123"
    with pytest.raises(errors.ModelNotFoundError):
        await blocking(lambda: sync.get_model("nope"))
    seen: list[str] = []
    with pytest.raises(errors.WorkerCrashedError):
        await blocking(lambda: seen.extend(c.text for c in sync.stream_response("x", mode="error")))
    assert seen == ["partial"]
    with pytest.raises(errors.APIConnectionError):
        await blocking(lambda: list(sync.stream_response("x", mode="truncated")))
    with pytest.raises(errors.ContextLengthExceededError):
        await blocking(lambda: sync.process_batch(["ok", "bad one"]))
    settled = await blocking(lambda: sync.process_batch_settled(["ok", "bad one"]))
    assert isinstance(settled[1], errors.ContextLengthExceededError)


async def test_keep_alive_connections_are_reused_and_closed() -> None:
    peers: list[Any] = []

    @web.middleware
    async def note_peer(request: web.Request, handler: Any) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return await handler(request)

    app = make_app()
    app.middlewares.append(note_peer)
    other = TestServer(app)
    await other.start_server()
    try:
        with SyncClient(api_key="k", endpoint=str(other.make_url(""))) as client:
            for _ in range(3):
                await blocking(lambda: client.process_prompt("x"))
            await blocking(lambda: list(client.stream_response("x")))
            await blocking(lambda: client.process_prompt("x"))
            assert len(set(peers)) == 1 and len(peers) == 5  # one connection for all five
            with client.session() as own:
                await blocking(lambda: own.process_prompt("x"))
            assert len(set(peers)) == 2  # the session had its own connection
    finally:
        await other.close()


async def test_a_stream_closed_early_drops_its_connection(sync: SyncClient, fake: Fake) -> None:
    def take_two() -> list[str]:
        with sync.stream_response("x", mode="endless") as stream:
            return [next(stream).text, next(stream).text]

    assert await blocking(take_two) == ["tok", "tok"]
    await asyncio.wait_for(fake.disconnected.wait(), timeout=10)


async def test_an_unclosed_client_leaves_no_open_socket(server: TestServer) -> None:
    client = SyncClient(api_key="k", endpoint=str(server.make_url("")))
    await blocking(lambda: client.process_prompt("x"))
    del client
    gc.collect()  # filterwarnings=error: an unclosed socket's ResourceWarning would fail the test
