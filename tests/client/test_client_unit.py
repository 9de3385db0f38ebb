"""APIClient against a fake daemon: a real aiohttp app on a real socket.

The fake speaks the documented wire shapes; the test decides its behaviour
through the request body (``fail_code``, ``mode``, ...).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llamahome
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from llamahome import error as errors
from llamahome._decoding import NDJSONDecoder
from llamahome.client import APIClient, ResponseStream
from llamahome.types import ModelInfo, ProcessResponse, StreamChunk, Usage

CLIENT_DIR = Path(llamahome.__file__).resolve().parent.parent

MODELS = [
    {
        "id": "llama3.3-7b",
        "name": "Llama 3.3 7B",
        "version": "3.3",
        "parameters": "7B",
        "context_length": 32768,
    },
    {
        "id": "org/gemma:Q4_K_M",
        "name": "Gemma",
        "version": "3",
        "parameters": "270M",
        "context_length": 8192,
        "quantization": "Q4_K_M",
        "size": 253_000_000,
        "capabilities": ["text-generation"],
        "performance": {"tokens_per_second": 45.2},
        "loaded": True,
        "some_future_key": [1, 2],
    },
]

EMOJI_TEXT = "héllo 🦙 wörld"


@dataclass
class Fake:
    """What the fake daemon saw, and what it was told to do."""

    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    config: dict[str, Any] = field(default_factory=lambda: {"model_settings": {"max_tokens": 100}})


FAKE = web.AppKey("fake", Fake)


def _result(prompt: str, body: dict[str, Any]) -> dict[str, Any]:
    text = f"echo: {prompt}"
    return {
        "text": text,
        "usage": {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(text),
            "total_tokens": len(prompt) + len(text),
        },
        "model": body.get("model") or "llama3.3",
        "created": "2024-03-15T12:00:00Z",
        "finish_reason": "stop",
    }


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


async def _record(request: web.Request) -> Any:
    body = await request.json() if request.can_read_body else None
    request.app[FAKE].requests.append((request.method, request.path, dict(request.headers), body))
    return body


def _failure(body: dict[str, Any]) -> web.Response | None:
    code = body.get("fail_code")
    if code is None:
        return None
    status = int(body.get("fail_status", 400))
    if body.get("fail_raw"):
        return web.Response(status=status, text="<html>Bad Gateway</html>")
    envelope = {
        "error": {
            "code": code,
            "message": f"failed: {code}",
            "details": body.get("fail_details", {}),
        }
    }
    headers = {"X-Request-Id": "req-123", **body.get("fail_headers", {})}
    return web.json_response(envelope, status=status, headers=headers)


async def process(request: web.Request) -> web.Response:
    body = await _record(request)
    if body.get("sleep"):
        await asyncio.sleep(body["sleep"])
    return _failure(body) or web.json_response(_result(body["prompt"], body))


async def batch(request: web.Request) -> web.Response:
    body = await _record(request)
    failure = _failure(body)
    if failure is not None:
        return failure
    results = []
    for prompt in body["prompts"]:
        if prompt.startswith("bad"):
            results.append(
                {
                    "error": {
                        "code": "context_length_exceeded",
                        "message": "too long",
                        "details": {"n_ctx": 8},
                    }
                }
            )
        else:
            results.append(_result(prompt, body))
    return web.json_response({"results": results})


async def stream(request: web.Request) -> web.StreamResponse:
    body = await _record(request)
    failure = _failure(body)
    if failure is not None:
        return failure
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    mode = body.get("mode", "plain")
    done = _line(
        {
            "done": True,
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            "finish_reason": "length",
            "model": "llama3.3",
            "created": "2024-03-15T12:00:00Z",
        }
    )
    if mode == "plain":
        for i, text in enumerate(["First", " part", " of response"]):
            await response.write(_line({"chunk": text, "index": i}))
        await response.write(done)
    elif mode == "split":
        # Every line cut into small pieces, mid-character too, each its own TCP write.
        payload = (
            b"\n"
            + _line({"chunk": EMOJI_TEXT, "index": 0})
            + b"\r\n"
            + _line({"chunk": "!", "index": 1})
            + done
        )
        for i in range(0, len(payload), 5):
            await response.write(payload[i : i + 5])
            await asyncio.sleep(0.002)
    elif mode == "no_trailing_newline":
        await response.write(_line({"chunk": "a", "index": 0}) + done.rstrip(b"\n"))
    elif mode == "long":
        await response.write(_line({"chunk": "abcdefghij" * 2 + "klmno", "index": 0}))
        await response.write(_line({"chunk": "xyz", "index": 1}) + done)
    elif mode == "error":
        await response.write(_line({"chunk": "partial", "index": 0}))
        await response.write(
            _line(
                {
                    "error": {
                        "code": "worker_crashed",
                        "message": "worker died",
                        "details": {"exit_code": -9},
                    }
                }
            )
        )
    elif mode == "truncated":
        await response.write(_line({"chunk": "partial", "index": 0}))
    elif mode == "endless":
        try:
            for i in range(10_000):
                await response.write(_line({"chunk": "tok", "index": i}))
                await asyncio.sleep(0.005)
        except ConnectionError:  # Noticed on the next write.
            request.app[FAKE].disconnected.set()
            return response
        except asyncio.CancelledError:  # Or the handler is cancelled (the test server's choice).
            request.app[FAKE].disconnected.set()
            raise
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response({"models": MODELS})


async def model(request: web.Request) -> web.Response:
    await _record(request)
    for item in MODELS:
        if item["id"] == request.match_info["model_id"]:
            return web.json_response(item)
    return web.json_response(
        {"error": {"code": "model_not_found", "message": "no such model", "details": {}}},
        status=404,
    )


async def get_config(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response(request.app[FAKE].config)


async def post_config(request: web.Request) -> web.Response:
    changes = await _record(request)
    request.app[FAKE].config.update(changes)
    return web.json_response(request.app[FAKE].config)


async def health(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app[FAKE] = Fake()
    app.router.add_post("/api/v1/process", process)
    app.router.add_post("/api/v1/batch", batch)
    app.router.add_post("/api/v1/stream", stream)
    app.router.add_get("/api/v1/models", models)
    app.router.add_get("/api/v1/models/{model_id}", model)
    app.router.add_get("/api/v1/config", get_config)
    app.router.add_post("/api/v1/config", post_config)
    app.router.add_get("/health", health)
    return app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LLAMAHOME_ENDPOINT", "LLAMAHOME_API_KEY", "LLAMAHOME_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLAMAHOME_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
async def server(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(make_app())


@pytest.fixture
def fake(server: TestServer) -> Fake:
    assert server.app is not None
    return server.app[FAKE]


@pytest.fixture
def endpoint(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def client(endpoint: str) -> AsyncIterator[APIClient]:
    # Retries are tested in test_retry.py; here every error must surface at once.
    async with APIClient(api_key="sk-test", endpoint=endpoint, max_retries=0) as client:
        yield client


# -- process ---------------------------------------------------------------------


async def test_process_prompt_sends_documented_body_and_headers(
    client: APIClient, fake: Fake
) -> None:
    response = await client.process_prompt(
        "Summarize this text",
        model="llama3.3",
        max_tokens=100,
        top_k=40,
        stop=["\n"],
        keep_alive="5m",
    )
    assert response == ProcessResponse(
        text="echo: Summarize this text",
        usage=Usage(19, 25, 44),
        model="llama3.3",
        created="2024-03-15T12:00:00Z",
        finish_reason="stop",
    )
    assert response.raw["text"] == response.text
    method, path, headers, body = fake.requests[-1]
    assert (method, path) == ("POST", "/api/v1/process")
    assert body == {
        "prompt": "Summarize this text",
        "model": "llama3.3",
        "max_tokens": 100,
        "top_k": 40,
        "stop": ["\n"],
        "keep_alive": "5m",
    }
    assert headers["Authorization"] == "Bearer sk-test"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"llamahome-python/{llamahome.__version__}"


async def test_unmanaged_client_works_per_call_without_leaking(endpoint: str, fake: Fake) -> None:
    """A client never entered nor closed opens and closes a session per call."""
    client = APIClient(endpoint=endpoint)
    assert (await client.process_prompt("a")).text == "echo: a"
    assert (await client.process_prompt("b")).text == "echo: b"
    assert "Authorization" not in fake.requests[-1][2]


async def test_session_context_reuses_one_session_and_has_process_alias(client: APIClient) -> None:
    async with client.session() as session:
        first = await session.process("x")
        pool = session._transport._shared
        second = await session.process("y", max_tokens=5)
        assert session._transport._shared is pool is not None
    assert (first.text, second.text) == ("echo: x", "echo: y")
    assert pool.closed


async def test_nested_async_with_keeps_session_until_outer_exit(endpoint: str) -> None:
    client = APIClient(endpoint=endpoint)
    async with client:
        async with client:
            await client.health()
        assert client._transport._shared is not None
        await client.health()
    assert client._transport._shared is None
    await client.close()  # idempotent


# -- stream ----------------------------------------------------------------------


async def test_stream_yields_chunks_and_final_metadata(client: APIClient, fake: Fake) -> None:
    stream = client.stream_response("Generate a story", model="llama3.3", max_tokens=10)
    assert isinstance(stream, ResponseStream)
    chunks = [chunk async for chunk in stream]
    assert chunks == [
        StreamChunk("First", 0),
        StreamChunk(" part", 1),
        StreamChunk(" of response", 2),
    ]
    assert stream.usage == Usage(3, 3, 6)
    assert (stream.finish_reason, stream.model, stream.created) == (
        "length",
        "llama3.3",
        "2024-03-15T12:00:00Z",
    )
    _method, path, headers, body = fake.requests[-1]
    assert (path, body) == (
        "/api/v1/stream",
        {"prompt": "Generate a story", "model": "llama3.3", "max_tokens": 10},
    )
    assert headers["Accept"] == "application/x-ndjson"


async def test_stream_reassembles_lines_split_across_tcp_writes(client: APIClient) -> None:
    """Multi-byte UTF-8 cut between reads, blank lines and CRLF are handled."""
    chunks = [c async for c in client.stream_response("x", mode="split")]
    assert [c.text for c in chunks] == [EMOJI_TEXT, "!"]


async def test_stream_final_line_without_newline(client: APIClient) -> None:
    stream = client.stream_response("x", mode="no_trailing_newline")
    assert [c.text async for c in stream] == ["a"]
    assert stream.finish_reason == "length"


async def test_stream_chunk_size_splits_long_chunks(client: APIClient) -> None:
    chunks = [c async for c in client.stream_response("x", mode="long", chunk_size=10)]
    assert chunks == [
        StreamChunk("abcdefghij", 0),
        StreamChunk("abcdefghij", 1),
        StreamChunk("klmno", 2),
        StreamChunk("xyz", 3),
    ]


async def test_stream_chunk_size_must_be_positive(client: APIClient) -> None:
    with pytest.raises(ValueError):
        client.stream_response("x", chunk_size=0)


async def test_stream_mid_stream_error_line_raises_mapped_error(client: APIClient) -> None:
    seen = []
    with pytest.raises(errors.WorkerCrashedError) as info:
        async for chunk in client.stream_response("x", mode="error"):
            seen.append(chunk.text)
    assert seen == ["partial"]
    assert (info.value.code, info.value.details) == ("worker_crashed", {"exit_code": -9})


async def test_stream_without_final_line_is_a_connection_error(client: APIClient) -> None:
    with pytest.raises(errors.APIConnectionError, match="final line"):
        async for _ in client.stream_response("x", mode="truncated"):
            pass


async def test_stream_http_error_raises_before_first_chunk(client: APIClient) -> None:
    with pytest.raises(errors.ModelNotFoundError):
        async with client.stream_response("x", fail_code="model_not_found", fail_status=404):
            pass  # pragma: no cover


@pytest.mark.parametrize("managed", [True, False])
async def test_stream_early_aclose_disconnects_server(
    endpoint: str, fake: Fake, managed: bool
) -> None:
    client = APIClient(endpoint=endpoint)
    if managed:
        await client.__aenter__()
    stream = client.stream_response("x", mode="endless")
    assert (await stream.__anext__()).text == "tok"
    await stream.aclose()
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await stream.aclose()  # idempotent
    await client.close()


async def test_stream_as_context_manager_closes_on_exit(client: APIClient, fake: Fake) -> None:
    async with client.stream_response("x", mode="endless") as stream:
        async for _ in stream:
            break
    await asyncio.wait_for(fake.disconnected.wait(), 5)


async def test_stream_abandoned_after_break_is_closed_by_finalizer(
    endpoint: str, fake: Fake
) -> None:
    client = APIClient(endpoint=endpoint)
    async for _ in client.stream_response("x", mode="endless"):
        break
    await asyncio.wait_for(fake.disconnected.wait(), 5)


# -- batch -----------------------------------------------------------------------


async def test_batch_groups_in_order(client: APIClient, fake: Fake) -> None:
    prompts = [f"q{i}" for i in range(7)]
    results = await client.process_batch(prompts, model="m", batch_size=3, temperature=0.5)
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(7)]
    sent = [body for _, path, _, body in fake.requests if path == "/api/v1/batch"]
    assert [b["prompts"] for b in sent] == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]
    assert all(b["model"] == "m" and b["temperature"] == 0.5 for b in sent)


async def test_batch_item_error_raises_by_default(client: APIClient) -> None:
    with pytest.raises(errors.ContextLengthExceededError) as info:
        await client.process_batch(["ok", "bad one", "ok"])
    assert isinstance(info.value, errors.InvalidRequestError)
    assert info.value.details == {"n_ctx": 8}


async def test_batch_settled_puts_item_errors_in_place(client: APIClient) -> None:
    results = await client.process_batch_settled(["a", "bad", "c"], batch_size=2)
    assert isinstance(results[0], ProcessResponse) and isinstance(results[2], ProcessResponse)
    assert isinstance(results[1], errors.ContextLengthExceededError)
    assert results[1].code == "context_length_exceeded" and results[1].status is None


async def test_batch_group_failure_raises(client: APIClient) -> None:
    with pytest.raises(errors.PayloadTooLargeError):
        await client.process_batch_settled(["a"], fail_code="payload_too_large", fail_status=413)


async def test_empty_batch_sends_nothing(client: APIClient, fake: Fake) -> None:
    assert await client.process_batch([]) == []
    assert fake.requests == []


# -- models, config, health -----------------------------------------------------


async def test_list_models(client: APIClient) -> None:
    listed = await client.list_models()
    assert [m.id for m in listed] == ["llama3.3-7b", "org/gemma:Q4_K_M"]
    assert listed[0] == ModelInfo(
        id="llama3.3-7b", name="Llama 3.3 7B", version="3.3", parameters="7B", context_length=32768
    )
    gemma = listed[1]
    assert (gemma.quantization, gemma.size, gemma.capabilities, gemma.loaded) == (
        "Q4_K_M",
        253_000_000,
        ("text-generation",),
        True,
    )
    assert gemma.performance == {"tokens_per_second": 45.2}
    assert gemma.raw["some_future_key"] == [1, 2]


async def test_get_model_quotes_the_id(client: APIClient, fake: Fake) -> None:
    info = await client.get_model("org/gemma:Q4_K_M")
    assert info.id == "org/gemma:Q4_K_M"
    with pytest.raises(errors.ModelNotFoundError) as exc_info:
        await client.get_model("nope")
    assert exc_info.value.status == 404


async def test_config_and_health(client: APIClient) -> None:
    assert await client.get_config() == {"model_settings": {"max_tokens": 100}}
    updated = await client.update_config({"system_settings": {"max_requests_per_minute": 60}})
    assert updated["system_settings"] == {"max_requests_per_minute": 60}
    assert await client.health() == {"status": "ok"}


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("invalid_request", 400, errors.InvalidRequestError),
        ("validation_error", 422, errors.ValidationError),
        ("context_length_exceeded", 400, errors.ContextLengthExceededError),
        ("authentication_error", 401, errors.AuthenticationError),
        ("permission_denied", 403, errors.PermissionDeniedError),
        ("not_found", 404, errors.NotFoundError),
        ("model_not_found", 404, errors.ModelNotFoundError),
        ("payload_too_large", 413, errors.PayloadTooLargeError),
        ("rate_limit_exceeded", 429, errors.RateLimitError),
        ("server_busy", 503, errors.ServerBusyError),
        ("model_load_failed", 500, errors.ModelLoadError),
        ("worker_crashed", 500, errors.WorkerCrashedError),
        ("internal_error", 500, errors.InternalServerError),
        ("some_new_code", 500, errors.InternalServerError),
        ("some_new_code", 502, errors.InternalServerError),
        ("some_new_code", 507, errors.InternalServerError),
        ("some_new_code", 409, errors.AlreadyExistsError),
        ("some_new_code", 404, errors.NotFoundError),
        ("some_new_code", 418, errors.APIError),
    ],
)
async def test_error_envelope_maps_to_class(
    client: APIClient, code: str, status: int, cls: type[errors.APIError]
) -> None:
    with pytest.raises(errors.APIError) as info:
        await client.process_prompt(
            "x", fail_code=code, fail_status=status, fail_details={"why": 1}
        )
    err = info.value
    assert type(err) is cls
    assert (err.code, err.status, err.details, err.request_id) == (
        code,
        status,
        {"why": 1},
        "req-123",
    )
    assert err.message == f"failed: {code}"
    assert isinstance(err, llamahome.APIError) and isinstance(err, errors.LlamaHomeError)


async def test_rate_limit_retry_after_from_details_then_header(client: APIClient) -> None:
    with pytest.raises(errors.RateLimitError) as info:
        await client.process_prompt(
            "x", fail_code="rate_limit_exceeded", fail_status=429, fail_details={"retry_after": 60}
        )
    assert info.value.retry_after == 60
    with pytest.raises(errors.ServerBusyError) as busy:
        await client.process_prompt(
            "x", fail_code="server_busy", fail_status=503, fail_headers={"Retry-After": "7"}
        )
    assert busy.value.retry_after == 7


async def test_non_envelope_error_body_falls_back_by_status(client: APIClient) -> None:
    with pytest.raises(errors.InternalServerError) as info:
        await client.process_prompt("x", fail_code="x", fail_status=502, fail_raw=True)
    assert (info.value.code, info.value.status) == ("internal_error", 502)
    assert "Bad Gateway" in info.value.message


def test_error_from_response_shapes() -> None:
    err = errors.error_from_response(
        429,
        b'{"error": {"code": "rate_limit_exceeded", "message": "slow"}}',
        {"retry-after-ms": "1500"},
    )
    assert isinstance(err, errors.RateLimitError) and err.retry_after == 1.5 and err.details == {}
    err = errors.error_from_response(404, "404: Not Found", {})
    assert type(err) is errors.NotFoundError and err.code == "not_found"
    err = errors.error_from_response(401, None, {})
    assert type(err) is errors.AuthenticationError and err.message == "HTTP 401"
    err = errors.error_from_response(
        503, {"error": "overloaded"}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    assert (
        isinstance(err, errors.ServerBusyError)
        and err.retry_after == 0.0
        and err.message == "overloaded"
    )


def test_api_error_pickles_with_its_fields() -> None:
    import pickle

    err = errors.RateLimitError("slow", status=429, details={"retry_after": 2}, request_id="r")
    copy = pickle.loads(pickle.dumps(err))
    assert (
        type(copy),
        copy.code,
        copy.status,
        copy.details,
        copy.retry_after,
        copy.request_id,
    ) == (
        errors.RateLimitError,
        "rate_limit_exceeded",
        429,
        {"retry_after": 2},
        2.0,
        "r",
    )
    assert str(err) == "slow (rate_limit_exceeded, HTTP 429)"


async def test_invalid_json_reply_is_an_api_error(aiohttp_server: Any) -> None:
    app = web.Application()

    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="not json")

    app.router.add_get("/health", broken)
    srv = await aiohttp_server(app)
    with pytest.raises(errors.APIError) as info:
        await APIClient(endpoint=str(srv.make_url("")), max_retries=0).health()
    assert info.value.code == "invalid_response"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_api_connection_error() -> None:
    client = APIClient(endpoint=f"http://127.0.0.1:{_free_port()}", max_retries=0)
    with pytest.raises(errors.APIConnectionError) as info:
        await client.process_prompt("x")
    assert info.value.code == "connection_error" and info.value.status is None
    assert info.value.__cause__ is not None
    with pytest.raises(errors.APIConnectionError):
        async for _ in client.stream_response("x"):
            pass  # pragma: no cover


async def test_timeout_is_api_timeout_error(endpoint: str) -> None:
    async with APIClient(endpoint=endpoint, timeout=0.05) as client:
        with pytest.raises(errors.APITimeoutError) as info:
            await client.process_prompt("x", sleep=1)
    assert isinstance(info.value, errors.APIConnectionError) and info.value.code == "timeout"


def test_constructor_validates_endpoint_and_timeout() -> None:
    with pytest.raises(ValueError):
        APIClient(endpoint="localhost:8910")
    with pytest.raises(ValueError):
        APIClient(endpoint="http://127.0.0.1:1", timeout=0)


# -- discovery -------------------------------------------------------------------


async def test_default_endpoint_and_token_from_state_dir(
    server: TestServer, fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "discovered"
    state.mkdir()
    monkeypatch.setenv("LLAMAHOME_STATE_DIR", str(state))
    (state / "daemon.json").write_text(
        json.dumps({"host": "0.0.0.0", "port": server.port, "pid": 1})
    )
    (state / "admin.token").write_text("admin-token\n")
    client = APIClient()
    assert client.endpoint == f"http://127.0.0.1:{server.port}"
    assert client.api_key == "admin-token"
    await client.health()
    assert fake.requests[-1][2]["Authorization"] == "Bearer admin-token"


def test_environment_overrides_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "daemon.json").write_text(json.dumps({"host": "::1", "port": 9000}))
    (state / "admin.token").write_text("file-token")
    client = APIClient()
    assert (client.endpoint, client.api_key) == ("http://[::1]:9000", "file-token")
    monkeypatch.setenv("LLAMAHOME_ENDPOINT", "http://example.test:1/")
    monkeypatch.setenv("LLAMAHOME_API_KEY", "env-token")
    client = APIClient()
    assert (client.endpoint, client.api_key) == ("http://example.test:1", "env-token")
    assert APIClient(api_key="explicit", endpoint="http://h:2").api_key == "explicit"


@pytest.mark.parametrize(
    "content", [None, "not json", '{"host": "127.0.0.1"}', '{"port": "80"}', "[1]"]
)
def test_missing_or_bad_runtime_file_falls_back_to_default(
    tmp_path: Path, content: str | None
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if content is not None:
        (state / "daemon.json").write_text(content)
    client = APIClient()
    assert (client.endpoint, client.api_key) == ("http://127.0.0.1:8910", None)


# -- pieces ----------------------------------------------------------------------


def test_ndjson_decoder_incremental() -> None:
    decoder = NDJSONDecoder()
    payload = (
        "\n".join(json.dumps({"chunk": c}, ensure_ascii=False) for c in ["é", "🦙", ""]).encode()
        + b"\r\n\n"
    )
    got = []
    for byte in payload:
        got.extend(decoder.feed(bytes([byte])))
    assert got == [{"chunk": "é"}, {"chunk": "🦙"}, {"chunk": ""}]
    assert decoder.feed(b'{"a": 1}') == [] and decoder.close() == [{"a": 1}]
    with pytest.raises(errors.APIError):
        decoder.feed(b"[1, 2]\n")


def test_public_names() -> None:
    import llamahome.auth
    import llamahome.client
    import llamahome.types

    assert llamahome.__all__ == [
        "APIClient", "APIError", "CircuitBreaker", "LlamaClient", "PooledClient",
        "RetryHandler", "SyncClient", "__version__",
    ]
    for module in (llamahome, llamahome.auth, llamahome.client, llamahome.types, errors):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


# -- interpreter exit --------------------------------------------------------------

EXIT_SCRIPT = """
import asyncio, json
from aiohttp import web
from llamahome.client import APIClient

async def process(request):
    return web.json_response({"text": "hi", "usage": {}, "model": "m", "created": "now"})

async def stream(request):
    response = web.StreamResponse()
    await response.prepare(request)
    try:
        for i in range(1000):
            await response.write(json.dumps({"chunk": "t", "index": i}).encode() + b"\\n")
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass
    return response

async def main():
    app = web.Application()
    app.router.add_post("/api/v1/process", process)
    app.router.add_post("/api/v1/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = APIClient(endpoint=f"http://127.0.0.1:{port}")
    print((await client.process_prompt("hello")).text)
    async for chunk in client.stream_response("hello"):
        print(chunk.text)
        break
    await runner.cleanup()

asyncio.run(main())
"""


def test_unclosed_client_leaves_no_warnings_at_exit(tmp_path: Path) -> None:
    """The guide's style (never closing the client) prints nothing at exit."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    result = subprocess.run(
        [sys.executable, "-W", "always", "-X", "tracemalloc", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(CLIENT_DIR), "LLAMAHOME_STATE_DIR": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hi", "t"]
    assert result.stderr == ""
