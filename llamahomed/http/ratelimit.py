"""Per-token rate limits: token buckets per token subject, the tier taken from the token.

Runs after authentication (it needs the claims). The limits come from ``[rate_limits]`` in the
settings; a tier without its own ``rpm`` uses ``system_settings.max_requests_per_minute``, so
``POST /api/v1/config`` changes that default live. The limiter is rebuilt from the config only
when the config object changed, and keeps its buckets across changes.

Every response to an authenticated request carries the limit's state, set in
``on_response_prepare`` so that a stream has them before its first byte:

    RateLimit-Policy: "basic";q=10;w=10         IETF draft-ietf-httpapi-ratelimit-headers
    RateLimit: "basic";r=9;t=1                  remaining, seconds until the bucket is full
    x-ratelimit-limit-requests: 10              OpenAI's names: the burst (bucket capacity),
    x-ratelimit-remaining-requests: 9           the requests left now,
    x-ratelimit-reset-requests: 1s              and the time until the bucket is full again
    x-ratelimit-{limit,remaining,reset}-tokens  when the tier has a tokens-per-minute limit

A refused request gets 429 ``rate_limit_exceeded`` with ``details.retry_after`` and exact
``Retry-After`` / ``retry-after-ms`` headers: the time until one request is allowed again.
Tokens per minute are debited with a request's actual usage after it ran (handlers report it
with :func:`note_usage`); a tier in token debt refuses requests until the debt is paid back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from llamahome.auth import TokenClaims
from llamahome.security import (
    AdvancedRateLimiter,
    RateLimitDecision,
    TierDecision,
    TierLimits,
)

from llamahomed.core.config_store import ConfigStore
from llamahomed.core.errors import InvalidRequest, RateLimitExceeded
from llamahomed.core.settings import Settings
from llamahomed.http.keys import CLAIMS, CONFIG, METRICS
from llamahomed.http.middleware import Handler
from llamahomed.service.generation import Meter

log = structlog.get_logger(__name__)


def tier_limits(settings: Settings) -> dict[str, TierLimits]:
    """The configured tiers with their defaults filled in."""
    default_rpm = settings.system_settings.max_requests_per_minute
    tiers: dict[str, TierLimits] = {}
    for name, tier in settings.rate_limits.tiers.items():
        rpm = tier.rpm or default_rpm
        tiers[name] = TierLimits(rpm=rpm, burst=tier.burst or max(1, math.ceil(rpm / 6)),
                                 tpm=tier.tpm)
    return tiers


class DaemonRateLimits:
    """The daemon's :class:`AdvancedRateLimiter`, kept in step with the live config."""

    def __init__(self, config: ConfigStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._seen: Settings | None = None
        settings = config.settings
        self.limiter = AdvancedRateLimiter(tier_limits(settings),
                                           default_tier=settings.rate_limits.default_tier,
                                           clock=clock, max_keys=settings.rate_limits.max_keys)
        self._seen = settings

    @property
    def enabled(self) -> bool:
        return self._config.settings.rate_limits.enabled

    def _sync(self) -> None:
        settings = self._config.settings
        if settings is not self._seen:
            self.limiter.configure(tier_limits(settings),
                                   default_tier=settings.rate_limits.default_tier)
            self._seen = settings

    def admit(self, claims: TokenClaims, cost: int = 1) -> TierDecision:
        """Take ``cost`` requests from the subject's bucket under the token's tier."""
        self._sync()
        return self.limiter.acquire(claims.user_id, claims.tier, cost)

    def record(self, subject: str, tier: str, tokens: int) -> None:
        """Debit a finished request's tokens from its tier's tokens-per-minute bucket."""
        self._sync()
        self.limiter.record_tokens(subject, tokens, tier)


RATE_LIMITS = web.AppKey("rate_limits", DaemonRateLimits)


@dataclass
class RequestLimit:
    """What the rate limiter decided for one request, and the tokens it used."""

    subject: str
    decision: TierDecision


LIMIT = web.RequestKey("rate_limit", RequestLimit)


def meter(app: web.Application, claims: TokenClaims | None) -> Meter | None:
    """What a Generation calls with its total tokens when it finishes: the debit from the
    token subject's tokens-per-minute budget (if its tier has one). HTTP routes and WebSocket
    messages alike."""
    limits = app[RATE_LIMITS]
    if claims is None or not limits.enabled:
        return None
    return lambda tokens: limits.record(claims.user_id, claims.tier, tokens)


def request_meter(request: web.Request) -> Meter | None:
    """``meter`` for an HTTP request's token."""
    return meter(request.app, request.get(CLAIMS))


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 when the token's subject is over its tier's limit; debit token usage afterwards."""
    claims = request.get(CLAIMS)
    decision = charge(request.app, claims) if claims is not None else None
    if claims is None or decision is None:
        return await handler(request)
    request[LIMIT] = RequestLimit(claims.user_id, decision)  # its headers, 429 included
    if not decision.allowed:
        raise refusal(decision)
    return await handler(request)


def charge(app: web.Application, claims: TokenClaims, cost: int = 1) -> TierDecision | None:
    """Take one request from the token subject's bucket (None when limits are off), counting a
    refusal in the metrics; HTTP requests and WebSocket messages alike. The caller answers a
    refused decision with ``refusal(decision)``."""
    limits = app[RATE_LIMITS]
    if not limits.enabled:
        return None
    decision = limits.admit(claims, cost)
    if not decision.allowed:
        app[METRICS].rate_limited()
    return decision


def charge_items(request: web.Request, items: int) -> None:
    """A batch costs one request per item: the middleware took one, this takes the rest
    (429 when the bucket lacks them, 400 when the batch is larger than the tier's burst)."""
    claims = request.get(CLAIMS)
    if claims is None or items <= 1:
        return
    decision = charge(request.app, claims, items - 1)
    if decision is None or decision.allowed:
        return  # (a refused charge takes nothing)
    if items > decision.requests.limit:
        raise InvalidRequest(
            f"a batch of {items} prompts costs {items} requests, more than tier "
            f"{decision.tier!r} allows at once (burst {decision.requests.limit}); send smaller "
            "batches", details={"items": items, "burst": decision.requests.limit,
                                "tier": decision.tier})
    raise refusal(decision)


def refusal(decision: TierDecision) -> RateLimitExceeded:
    """The 429 for a refused decision, with exact Retry-After and retry-after-ms."""
    wait = decision.retry_after
    seconds, millis = decision.retry_after_seconds, math.ceil(wait * 1000 - 1e-6)
    by_tokens = decision.tokens is not None and not decision.tokens.allowed
    what = "tokens per minute" if by_tokens else "requests"
    limit = decision.tokens if by_tokens and decision.tokens else decision.requests
    return RateLimitExceeded(
        f"too many {what} for tier {decision.tier!r} ({limit.per_minute:g}/min, burst "
        f"{limit.limit}); retry in {seconds} s",
        details={"retry_after": seconds, "retry_after_ms": millis, "tier": decision.tier,
                 "limit": "tokens" if by_tokens else "requests"},
        headers={"Retry-After": str(seconds), "retry-after-ms": str(millis)})


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def limit_headers(tier: str, requests: RateLimitDecision,
                  tokens: RateLimitDecision | None) -> dict[str, str]:
    """The IETF draft and OpenAI-style headers for a request's limit state."""
    name = tier.replace("\\", "").replace('"', "")
    headers = {
        "RateLimit-Policy": f'"{name}";q={requests.limit};w={requests.window}',
        "RateLimit": f'"{name}";r={requests.remaining};t={math.ceil(requests.reset - 1e-9)}',
        "x-ratelimit-limit-requests": str(requests.limit),
        "x-ratelimit-remaining-requests": str(requests.remaining),
        "x-ratelimit-reset-requests": format_duration(requests.reset),
    }
    if tokens is not None:
        headers.update({
            "x-ratelimit-limit-tokens": str(tokens.limit),
            "x-ratelimit-remaining-tokens": str(tokens.remaining),
            "x-ratelimit-reset-tokens": format_duration(tokens.reset),
        })
    return headers


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: before any response's headers go out, streams included."""
    state = request.get(LIMIT)
    if state is not None:
        decision = state.decision
        response.headers.update(limit_headers(decision.tier, decision.requests, decision.tokens))


def setup(app: web.Application) -> None:
    """Register the limiter and the header hook (the middleware is listed in ``create_app``)."""
    app[RATE_LIMITS] = DaemonRateLimits(app[CONFIG])
    app.on_response_prepare.append(add_rate_limit_headers)
