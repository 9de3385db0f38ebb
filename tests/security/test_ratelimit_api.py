"""Rate limits on the real app (real socket, real workers, the tiny model), time on a fake clock."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llamahomed.http.keys import AUTHORITY, CONFIG
from llamahomed.http.ratelimit import RATE_LIMITS, DaemonRateLimits
from llamahomed.http.app import create_app
from tests.security.test_ratelimit_buckets import FakeClock

LIMIT_HEADERS = ("RateLimit-Policy", "RateLimit", "x-ratelimit-limit-requests",
                 "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", "x-request-id")
GREEDY = {"temperature": 0}


class Limited:
    """The app with its rate limiter on a fake clock, and a way to mint tokens."""

    def __init__(self, client: Any, app: Any, clock: FakeClock) -> None:
        self.client, self.app, self.clock = client, app, clock
        self.admin = {"Authorization": "Bearer "
                      + app[CONFIG].settings.admin_token_file.read_text().strip()}

    def headers(self, user: str = "alice", tier: str = "basic") -> dict[str, str]:
        token = self.app[AUTHORITY].generator.create_token(user, scopes=("inference",), tier=tier)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def start(aiohttp_client: Callable[..., Awaitable[Any]],
          make_settings: Callable[..., Any]) -> Callable[..., Awaitable[Limited]]:
    async def run(**overrides: Any) -> Limited:
        app = create_app(make_settings(**overrides))
        clock = FakeClock()
        app[RATE_LIMITS] = DaemonRateLimits(app[CONFIG], clock=clock)
        return Limited(await aiohttp_client(app), app, clock)

    return run


TIGHT = {"rate_limits": {"tiers": {"basic": {"rpm": 6, "burst": 2}}}}  # one request per 10 s


async def test_over_the_limit_is_429_in_the_envelope_with_exact_retry_after(start: Any) -> None:
    lim = await start(**TIGHT)
    user = lim.headers()
    for remaining in (1, 0):
        ok = await lim.client.get("/api/v1/models", headers=user)
        assert ok.status == 200
        assert ok.headers["x-ratelimit-remaining-requests"] == str(remaining)
    lim.clock.advance(2.5)  # a quarter of a token back: 7.5 s to go
    refused = await lim.client.get("/api/v1/models", headers=user)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["details"]["retry_after"] == 8
    assert body["error"]["details"]["tier"] == "basic"
    assert refused.headers["Retry-After"] == "8"
    assert refused.headers["retry-after-ms"] == "7500"
    assert refused.headers["RateLimit-Policy"] == '"basic";q=2;w=20'
    assert refused.headers["RateLimit"] == '"basic";r=0;t=18'  # 1.75 tokens missing at 0.1/s
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "17.5s"
    assert refused.headers["x-request-id"]
    lim.clock.advance(7.5)
    assert (await lim.client.get("/api/v1/models", headers=user)).status == 200
    assert (await lim.client.get("/api/v1/models", headers=user)).status == 429


async def test_every_authenticated_response_carries_the_headers_errors_included(start: Any) -> None:
    lim = await start(**TIGHT)
    user = lim.headers()
    missing = await lim.client.get("/api/v1/models/no-such-model", headers=user)
    assert missing.status == 404
    bad = await lim.client.post("/api/v1/process", headers=user, json={"prompt": ""})
    assert bad.status == 422
    for response in (missing, bad):
        assert all(name in response.headers for name in LIMIT_HEADERS), response.headers
    assert bad.headers["x-ratelimit-remaining-requests"] == "0"
    # no subject, no limit: /health and a 401 carry only the request id
    for response in (await lim.client.get("/health"),
                     await lim.client.get("/api/v1/models")):
        assert "x-request-id" in response.headers and "RateLimit" not in response.headers


async def test_a_stream_has_the_headers_before_its_first_chunk(start: Any) -> None:
    lim = await start(**TIGHT)
    response = await lim.client.post("/api/v1/stream", headers=lim.headers(),
                                     json={"prompt": "hello", "max_tokens": 20, **GREEDY})
    assert response.status == 200
    # a chunked body: HTTP/1.1 sends every header before the first chunk, so a header seen
    # here was set before the stream's first byte (trailers are not used)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["x-ratelimit-remaining-requests"] == "1"
    assert response.headers["RateLimit"].startswith('"basic";r=1;')
    first = json.loads(await response.content.readline())
    assert "chunk" in first
    lines = [json.loads(line) for line in (await response.read()).splitlines()]
    assert lines[-1]["done"] is True


async def test_max_requests_per_minute_changes_the_default_limit_live(start: Any) -> None:
    lim = await start()  # basic: rpm from system_settings (60), burst rpm/6 = 10
    user = lim.headers()
    first = await lim.client.get("/api/v1/models", headers=user)
    assert first.headers["x-ratelimit-limit-requests"] == "10"
    assert first.headers["RateLimit-Policy"] == '"basic";q=10;w=10'
    changed = await lim.client.post("/api/v1/config", headers=lim.admin,
                                    json={"system_settings": {"max_requests_per_minute": 6}})
    assert changed.status == 200, await changed.text()
    after = await lim.client.get("/api/v1/models", headers=user)
    assert after.headers["x-ratelimit-limit-requests"] == "1"  # ceil(6 / 6)
    assert after.headers["RateLimit-Policy"] == '"basic";q=1;w=10'
    refused = await lim.client.get("/api/v1/models", headers=user)
    assert refused.status == 429 and refused.headers["Retry-After"] == "10"
    # the admin token is enterprise tier: its explicit limit did not move
    admin = await lim.client.get("/api/v1/models", headers=lim.admin)
    assert admin.headers["x-ratelimit-limit-requests"] == "100"


async def test_tiers_are_set_live_through_the_config_endpoint(start: Any) -> None:
    lim = await start()
    user = lim.headers(tier="pro")
    before = await lim.client.get("/api/v1/models", headers=user)
    assert before.headers["x-ratelimit-limit-requests"] == "50"
    changed = await lim.client.post("/api/v1/config", headers=lim.admin, json={
        "rate_limits": {"tiers": {"basic": {}, "pro": {"rpm": 120, "burst": 3},
                                  "enterprise": {"rpm": 1000, "burst": 100}}}})
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["rate_limits"]["tiers"]["pro"]["burst"] == 3
    after = await lim.client.get("/api/v1/models", headers=user)
    assert after.headers["x-ratelimit-limit-requests"] == "3"
    assert after.headers["x-ratelimit-remaining-requests"] == "2"  # kept its bucket, cut to 3
    bad = await lim.client.post("/api/v1/config", headers=lim.admin,
                                json={"rate_limits": {"default_tier": "gold"}})
    assert bad.status == 422 and (await bad.json())["error"]["code"] == "validation_error"


async def test_the_tier_in_the_token_selects_the_limit(start: Any) -> None:
    lim = await start()
    seen = {}
    for tier in ("basic", "pro", "enterprise", "gold"):
        response = await lim.client.get("/api/v1/models", headers=lim.headers(tier=tier))
        seen[tier] = (response.headers["RateLimit-Policy"],
                      response.headers["x-ratelimit-limit-requests"])
    assert seen == {"basic": ('"basic";q=10;w=10', "10"), "pro": ('"pro";q=50;w=10', "50"),
                    "enterprise": ('"enterprise";q=100;w=6', "100"),
                    "gold": ('"basic";q=10;w=10', "10")}  # unknown tier: the default tier


async def test_each_subject_has_its_own_bucket(start: Any) -> None:
    lim = await start(rate_limits={"tiers": {"basic": {"rpm": 6, "burst": 1}}})
    assert (await lim.client.get("/api/v1/models", headers=lim.headers("alice"))).status == 200
    assert (await lim.client.get("/api/v1/models", headers=lim.headers("alice"))).status == 429
    # a second token of the same user shares the bucket; another user does not
    assert (await lim.client.get("/api/v1/models", headers=lim.headers("alice"))).status == 429
    assert (await lim.client.get("/api/v1/models", headers=lim.headers("bob"))).status == 200


async def test_tokens_per_minute_are_debited_with_real_usage(start: Any) -> None:
    lim = await start(rate_limits={"tiers": {"basic": {"rpm": 600, "burst": 100, "tpm": 60}}})
    user = lim.headers()  # 60 tokens a minute: one token a second
    first = await lim.client.post("/api/v1/process", headers=user,
                                  json={"prompt": "the cat sat", "max_tokens": 12, **GREEDY})
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "60"
    assert first.headers["x-ratelimit-remaining-tokens"] == "60"
    used_1 = (await first.json())["usage"]["total_tokens"]
    assert 12 < used_1 < 30

    second = await lim.client.post("/api/v1/stream", headers=user,
                                   json={"prompt": "the cat sat", "max_tokens": 45, **GREEDY})
    assert second.headers["x-ratelimit-remaining-tokens"] == str(60 - used_1)
    lines = [json.loads(line) for line in (await second.read()).splitlines()]
    used_2 = lines[-1]["usage"]["total_tokens"]
    assert 60 - used_1 - used_2 < 1  # now in debt

    refused = await lim.client.post("/api/v1/process", headers=user,
                                    json={"prompt": "x", "max_tokens": 1})
    assert refused.status == 429
    body = await refused.json()
    wait = 1 - (60 - used_1 - used_2)  # seconds at one token a second
    assert body["error"]["details"] == {"retry_after": wait, "retry_after_ms": wait * 1000,
                                        "tier": "basic", "limit": "tokens"}
    assert refused.headers["Retry-After"] == str(wait)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    lim.clock.advance(wait)
    again = await lim.client.post("/api/v1/batch", headers=user,
                                  json={"prompts": ["a", "b"], "max_tokens": 3, **GREEDY})
    assert again.status == 200
    used_3 = sum(r["usage"]["total_tokens"] for r in (await again.json())["results"])
    assert (await lim.client.get("/api/v1/models", headers=user)).status == 429
    assert math.isclose(
        lim.app[RATE_LIMITS].limiter.check("alice", "basic").retry_after, used_3, abs_tol=1e-6)


async def test_limits_can_be_switched_off(start: Any) -> None:
    lim = await start(rate_limits={"enabled": False, "tiers": {"basic": {"rpm": 6, "burst": 1}}})
    for _ in range(3):
        response = await lim.client.get("/api/v1/models", headers=lim.headers())
        assert response.status == 200 and "RateLimit" not in response.headers


async def test_the_client_library_reads_the_429(start: Any) -> None:
    from llamahome.error import RateLimitError, error_from_response

    lim = await start(rate_limits={"tiers": {"basic": {"rpm": 6, "burst": 1}}})
    await lim.client.get("/api/v1/models", headers=lim.headers())
    refused = await lim.client.get("/api/v1/models", headers=lim.headers())
    error = error_from_response(refused.status, await refused.json(), refused.headers)
    assert isinstance(error, RateLimitError) and error.retry_after == 10


def test_reset_durations_use_openais_format() -> None:
    from llamahomed.http.ratelimit import format_duration

    assert [format_duration(s) for s in (0, 0.0201, 1, 17.5, 100, 3600)] == [
        "0s", "21ms", "1s", "17.5s", "1m40s", "60m0s"]
