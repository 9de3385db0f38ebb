"""RetryHandler and CircuitBreaker against a real aiohttp server that plays a script of replies.

Each test gives the server a list of steps (a status with its headers, a reply cut off, a slow
reply, a stream that fails midway); the server answers the n-th request with the n-th step and
records every request, so each test sees exactly what went over the wire. The happy path through
the real daemon is in tests/e2e/test_guide_examples.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from llamahome import error as errors
from llamahome.client import APIClient, SyncClient
from llamahome.error import CircuitBreaker, RetryHandler

OK = {"text": "fine", "usage": {"prompt_tokens": 1, "completion_tokens": 1}, "model": "m",
      "created": "now"}


@dataclass
class Step:
    status: int = 200
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    drop: bool = False  # close the connection without a reply
    sleep: float = 0.0
    stream_then_fail: bool = False  # 200, one chunk, then an error line


@dataclass
class Script:
    steps: list[Step] = field(default_factory=list)
    seen: list[float] = field(default_factory=list)  # when each request arrived


SCRIPT = web.AppKey("script", Script)


async def play(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT]
    script.seen.append(time.monotonic())
    step = script.steps.pop(0) if script.steps else Step()
    if step.sleep:
        await asyncio.sleep(step.sleep)
    if step.drop:
        assert request.transport is not None
        request.transport.close()
        return web.Response()
    if step.status >= 400:
        envelope = {"error": {"code": step.code or "internal_error", "message": "scripted",
                              "details": step.details}}
        return web.json_response(envelope, status=step.status, headers=step.headers)
    if request.path.endswith("/stream"):
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"chunk": "a", "index": 0}\n')
        if step.stream_then_fail:
            line = {"error": {"code": "worker_crashed", "message": "gone", "details": {}}}
        else:
            line = {"done": True, "usage": {"completion_tokens": 1}}
        await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response
    return web.json_response(OK)


@pytest.fixture
async def server(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> TestServer:
    app = web.Application()
    app[SCRIPT] = Script()
    app.router.add_post("/api/v1/process", play)
    app.router.add_post("/api/v1/stream", play)
    return await aiohttp_server(app)


def script(server: TestServer, *steps: Step) -> Script:
    played = server.app[SCRIPT]
    played.steps[:] = list(steps)
    return played


def client(server: TestServer, **kwargs: Any) -> APIClient:
    retry = kwargs.pop("retry", RetryHandler(kwargs.pop("max_retries", 3), backoff_factor=0.01))
    return APIClient(api_key="k", endpoint=str(server.make_url("")), retry=retry, **kwargs)


# -- what is retried ------------------------------------------------------------------------

async def test_503_is_retried_after_retry_after_ms(server: TestServer) -> None:
    played = script(server, Step(503, "server_busy", {"retry-after-ms": "150"}), Step())
    response = await client(server).process_prompt("x")
    assert response.text == "fine" and len(played.seen) == 2
    waited = played.seen[1] - played.seen[0]
    assert 0.15 <= waited < 0.15 * 1.1 + 0.2  # the server's wait, plus at most 10% jitter


async def test_429_honours_retry_after_seconds(server: TestServer) -> None:
    played = script(server, Step(429, "rate_limit_exceeded", {"Retry-After": "1"}), Step())
    await client(server).process_prompt("x")
    assert len(played.seen) == 2 and played.seen[1] - played.seen[0] >= 1.0


async def test_details_retry_after_is_honoured(server: TestServer) -> None:
    played = script(server, Step(429, "rate_limit_exceeded", details={"retry_after": 0.2}), Step())
    await client(server).process_prompt("x")
    assert played.seen[1] - played.seen[0] >= 0.2


async def test_a_wait_longer_than_max_retry_after_is_not_taken(server: TestServer) -> None:
    played = script(server, Step(429, "rate_limit_exceeded", {"Retry-After": "3600"}), Step())
    with pytest.raises(errors.RateLimitError) as info:
        await client(server).process_prompt("x")
    assert info.value.retry_after == 3600 and len(played.seen) == 1


async def test_5xx_is_retried_until_max_retries(server: TestServer) -> None:
    played = script(server, Step(500), Step(502, "bad_gateway"), Step())
    assert (await client(server, max_retries=2).process_prompt("x")).text == "fine"
    assert len(played.seen) == 3
    played = script(server, Step(500), Step(500, "worker_crashed"), Step())
    with pytest.raises(errors.WorkerCrashedError):
        await client(server, max_retries=1).process_prompt("x")
    assert len(played.seen) == 3 + 2


async def test_a_dropped_connection_is_retried(server: TestServer) -> None:
    played = script(server, Step(drop=True), Step())
    assert (await client(server).process_prompt("x")).text == "fine"
    assert len(played.seen) == 2


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "invalid_request", errors.InvalidRequestError),
    (401, "authentication_error", errors.AuthenticationError),
    (404, "model_not_found", errors.ModelNotFoundError),
    (422, "validation_error", errors.InvalidRequestError),
    (500, "model_load_failed", errors.ModelLoadError),
])
async def test_what_is_not_worth_repeating_is_raised_at_once(
    server: TestServer, status: int, code: str, cls: type[errors.APIError]
) -> None:
    played = script(server, Step(status, code), Step())
    with pytest.raises(cls):
        await client(server).process_prompt("x")
    assert len(played.seen) == 1


async def test_a_507_model_too_large_is_sent_exactly_once(server: TestServer) -> None:
    played = script(server, Step(507, "model_too_large", details={"fits": []}), Step())
    with pytest.raises(errors.ModelTooLargeError) as info:
        await client(server, max_retries=3).process_prompt("x")
    assert len(played.seen) == 1
    assert (info.value.status, info.value.code) == (507, "model_too_large")


@pytest.mark.parametrize(("status", "code"), [
    (507, "insufficient_storage"), (409, "already_exists"), (403, "host_not_allowed"),
    (431, "headers_too_large"), (500, "quantize_failed"), (404, "download_not_found"),
    (502, "digest_mismatch"), (502, "not_gguf"), (507, "some_new_code"), (501, "some_new_code"),
])
async def test_codes_the_table_marks_final_are_not_repeated(
    server: TestServer, status: int, code: str
) -> None:
    played = script(server, Step(status, code), Step())
    with pytest.raises(errors.APIError):
        await client(server).process_prompt("x")
    assert len(played.seen) == 1


@pytest.mark.parametrize(("status", "code", "cls"), [
    (500, "some_new_code", errors.InternalServerError),
    (504, "gateway_timeout", errors.InternalServerError),
    (502, "download_interrupted", errors.DownloadInterruptedError),
    (502, "download_failed", errors.DownloadError),
    (503, "shutting_down", errors.ShuttingDownError),
    (429, "too_many_streams", errors.TooManyStreamsError),
])
async def test_retryable_and_unknown_5xx_codes_are_repeated(
    server: TestServer, status: int, code: str, cls: type[errors.APIError]
) -> None:
    played = script(server, *[Step(status, code, {"retry-after-ms": "10"})] * 3)
    with pytest.raises(cls):
        await client(server, max_retries=2).process_prompt("x")
    assert len(played.seen) == 3


async def test_timeouts_are_retried_only_when_asked(server: TestServer) -> None:
    played = script(server, Step(sleep=1.0), Step())
    with pytest.raises(errors.APITimeoutError):
        await client(server, timeout=0.2).process_prompt("x")
    assert len(played.seen) == 1
    played = script(server, Step(sleep=1.0), Step())
    retry = RetryHandler(2, 0.01, retry_timeouts=True)
    assert (await client(server, timeout=0.2, retry=retry).process_prompt("x")).text == "fine"
    assert len(played.seen) == 1 + 2


async def test_a_stream_is_retried_before_its_first_byte_never_after(server: TestServer) -> None:
    played = script(server, Step(503, "server_busy", {"retry-after-ms": "10"}), Step())
    chunks = [c.text async for c in client(server).stream_response("x")]
    assert chunks == ["a"] and len(played.seen) == 2
    played = script(server, Step(stream_then_fail=True), Step())
    seen = []
    with pytest.raises(errors.WorkerCrashedError):
        async for chunk in client(server).stream_response("x"):
            seen.append(chunk.text)
    assert seen == ["a"] and len(played.seen) == 2 + 1


async def test_the_sync_client_retries_the_same_way(server: TestServer) -> None:
    played = script(server, Step(503, "server_busy", {"retry-after-ms": "20"}), Step(500), Step())
    endpoint = str(server.make_url(""))
    with SyncClient(api_key="k", endpoint=endpoint, retry=RetryHandler(2, 0.01)) as sync:
        # In a thread: the blocking client must not block the loop that runs the server.
        text = await asyncio.to_thread(lambda: sync.process_prompt("x").text)
    assert text == "fine" and len(played.seen) == 3


# -- the schedule -----------------------------------------------------------------------------

def test_backoff_doubles_is_capped_and_jittered_down_by_at_most_a_quarter() -> None:
    handler = RetryHandler(max_retries=10, backoff_factor=2, max_backoff=30, rng=random.Random(7))
    busy = errors.ServerBusyError("busy", status=503)
    for attempt, base in enumerate([2, 4, 8, 16, 30, 30]):
        delays = [handler.delay_for(busy, attempt) for _ in range(50)]
        assert all(d is not None and 0.75 * base <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert handler.delay_for(busy, 10) is None


def test_retry_after_is_a_floor_with_up_to_ten_percent_jitter() -> None:
    handler = RetryHandler(rng=random.Random(1))
    limited = errors.RateLimitError("slow", status=429, retry_after=5)
    delays = [handler.delay_for(limited, 0) for _ in range(50)]
    assert all(d is not None and 5 <= d <= 5.5 for d in delays)


def test_guide_arguments_and_validation() -> None:
    handler = RetryHandler(max_retries=3, backoff_factor=2)
    assert (handler.max_retries, handler.backoff_factor) == (3, 2.0)
    with pytest.raises(ValueError):
        RetryHandler(max_retries=-1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


# -- circuit breaker ----------------------------------------------------------------------------

async def test_breaker_opens_after_threshold_fails_fast_then_half_opens(server: TestServer) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=0.3)
    api = client(server, max_retries=0, circuit_breaker=breaker)
    played = script(server, Step(500), Step(503, "server_busy"), Step(drop=True), Step())
    for expected in (errors.InternalServerError, errors.ServerBusyError, errors.APIConnectionError):
        with pytest.raises(expected):
            await api.process_prompt("x")
    assert breaker.state == "open"
    with pytest.raises(errors.CircuitOpenError) as info:
        await api.process_prompt("x")
    assert len(played.seen) == 3  # refused without a request
    assert info.value.code == "circuit_open" and 0 < (info.value.retry_after or 0) <= 0.3
    await asyncio.sleep(0.35)
    assert breaker.state == "half_open"
    assert (await api.process_prompt("x")).text == "fine"  # the trial succeeds
    assert breaker.state == "closed" and breaker.failures == 0


async def test_a_failed_trial_opens_the_breaker_again(server: TestServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.2)
    api = client(server, max_retries=0, circuit_breaker=breaker)
    script(server, Step(500), Step(500), Step())
    with pytest.raises(errors.InternalServerError):
        await api.process_prompt("x")
    await asyncio.sleep(0.25)
    with pytest.raises(errors.InternalServerError):
        await api.process_prompt("x")  # the half-open trial
    assert breaker.state == "open"


async def test_4xx_never_counts_and_timeouts_do(server: TestServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    api = client(server, max_retries=0, circuit_breaker=breaker, timeout=0.2)
    script(server, *[Step(429, "rate_limit_exceeded", {"Retry-After": "3600"})] * 3,
           Step(404, "not_found"), Step(401, "authentication_error"))
    for _ in range(5):
        with pytest.raises(errors.APIError):
            await api.process_prompt("x")
    assert breaker.state == "closed" and breaker.failures == 0
    script(server, Step(sleep=1.0), Step(sleep=1.0))
    for _ in range(2):
        with pytest.raises(errors.APITimeoutError):
            await api.process_prompt("x")
    assert breaker.state == "open"


async def test_a_final_5xx_shows_the_daemon_is_up_and_never_opens_the_breaker(
        server: TestServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    api = client(server, max_retries=0, circuit_breaker=breaker)
    script(server, Step(500), Step(507, "model_too_large"), Step(500, "model_load_failed"),
           Step(502, "digest_mismatch"), Step(500))
    for _ in range(5):
        with pytest.raises(errors.APIError):
            await api.process_prompt("x")
    assert breaker.state == "closed" and breaker.failures == 1  # only the last 500 counted


async def test_retries_stop_when_the_breaker_opens(server: TestServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    played = script(server, *[Step(500)] * 5)
    with pytest.raises(errors.CircuitOpenError):
        await client(server, max_retries=4, circuit_breaker=breaker).process_prompt("x")
    assert len(played.seen) == 2


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: now[0])
    breaker.before_call()
    breaker.record(errors.InternalServerError("x", status=500))
    assert breaker.state == "open"
    now[0] = 10.0
    breaker.before_call()  # the trial
    with pytest.raises(errors.CircuitOpenError):
        breaker.before_call()  # a second caller meanwhile
    breaker.record(None)
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.record(asyncio.CancelledError())  # says nothing about the daemon
    assert breaker.state == "closed" and breaker.failures == 0
