"""Token-bucket rate limits, shared by the daemon and anyone who embeds or calls it.

A bucket holds up to ``burst`` tokens and refills at ``requests_per_minute / 60`` tokens per
second. A request takes one token; when fewer than one is left it is refused, and the refusal
says exactly how long until one token is back (not a whole window)::

    limiter = RateLimiter(requests_per_minute=60, burst_size=10)
    decision = limiter.acquire("user123")
    if not decision.allowed:
        time.sleep(decision.retry_after)      # seconds until one token is back

    limiter = AdvancedRateLimiter(tiers={
        "basic": {"rpm": 60, "burst": 10},
        "pro": {"rpm": 300, "burst": 50},
        "enterprise": {"rpm": 1000, "burst": 100},
    })
    decision = limiter.acquire("user123", tier="pro")

A tier may also set ``tpm`` (tokens per minute, with ``tpm_burst`` defaulting to ``tpm``): a
second bucket, debited after the fact with :meth:`AdvancedRateLimiter.record_tokens` once a
request's usage is known. It may go into debt; requests are refused while it holds less than
one token.

Buckets are kept per key (the daemon uses the token's subject). A bucket that has refilled to
full is the same as no bucket, so idle buckets are dropped, and at most ``max_keys`` are kept
(the least recently used go first). Every class takes a ``clock`` (seconds, monotonic) so tests
can drive time by hand. Nothing here is thread-safe: use one limiter per event loop or thread.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AdvancedRateLimiter",
    "RateLimitDecision",
    "RateLimiter",
    "TierDecision",
    "TierLimits",
]

Clock = Callable[[], float]

DEFAULT_MAX_KEYS = 10_000
"""Buckets a limiter keeps at most (the least recently used are dropped first)."""


@dataclass(frozen=True)
class RateLimitDecision:
    """The answer to one request against one bucket.

    ``remaining`` is the whole number of requests (or tokens) still available now;
    ``retry_after`` the seconds until one is available again (0.0 when one is now);
    ``reset`` the seconds until the bucket is full again.
    """

    allowed: bool
    limit: int
    """The bucket's capacity (the burst)."""
    remaining: int
    retry_after: float
    reset: float
    per_minute: float
    """The refill rate, per minute."""
    policy: str = "default"
    """The tier or policy name the decision was made under."""

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, as ``Retry-After`` wants it."""
        return math.ceil(self.retry_after - 1e-9) if self.retry_after > 0 else 0

    @property
    def window(self) -> int:
        """Seconds an empty bucket takes to fill (the IETF draft's ``w`` for this policy)."""
        return max(1, math.ceil(self.limit * 60.0 / self.per_minute - 1e-9))


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now


class RateLimiter:
    """Token buckets with one limit, one bucket per key.

    ``burst_size`` defaults to ``requests_per_minute`` (a minute's worth). ``acquire`` takes
    ``cost`` tokens when that many are there; ``check`` says what ``acquire`` would do without
    taking anything; ``debit`` takes tokens unconditionally (the balance may go negative) for
    costs known only after the fact; ``wait`` sleeps until a request is allowed.
    """

    def __init__(
        self,
        requests_per_minute: float,
        burst_size: int | None = None,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
        name: str = "default",
    ) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.name = name
        self.requests_per_minute = 0.0
        self.burst_size = 0
        self.configure(requests_per_minute, burst_size)

    def configure(self, requests_per_minute: float, burst_size: int | None = None) -> None:
        """Change the limit; buckets that hold more than the new burst are cut down to it."""
        if not (isinstance(requests_per_minute, (int, float)) and math.isfinite(requests_per_minute)
                and requests_per_minute > 0):
            raise ValueError("requests_per_minute must be a positive number")
        burst = math.ceil(requests_per_minute) if burst_size is None else burst_size
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValueError("burst_size must be a positive integer")
        self.requests_per_minute = float(requests_per_minute)
        self.burst_size = burst
        for bucket in self._buckets.values():
            bucket.tokens = min(bucket.tokens, float(burst))

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.requests_per_minute / 60.0

    def __len__(self) -> int:
        """How many keys currently have a (not full) bucket."""
        return len(self._buckets)

    def __bool__(self) -> bool:
        return True  # a limiter with no buckets yet is still a limiter

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._evict(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst_size), now)
        else:
            self._buckets.move_to_end(key)
            if now > bucket.updated:
                bucket.tokens = min(float(self.burst_size),
                                    bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now
        return bucket

    def _evict(self, now: float) -> None:
        """Drop idle buckets (full again by now) from the LRU end, then any beyond max_keys."""
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if oldest.tokens + (now - oldest.updated) * self.rate < self.burst_size:
                break
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    def _decision(self, allowed: bool, tokens: float, cost: float) -> RateLimitDecision:
        missing = cost - tokens
        retry_after = 0.0 if missing <= 0 else missing / self.rate
        if cost > self.burst_size:
            retry_after = math.inf  # can never be satisfied under this limit
        reset = max(0.0, (self.burst_size - tokens) / self.rate)
        return RateLimitDecision(
            allowed=allowed, limit=self.burst_size, remaining=max(0, math.floor(tokens + 1e-9)),
            retry_after=retry_after, reset=reset, per_minute=self.requests_per_minute,
            policy=self.name)

    def acquire(self, key: str = "default", cost: float = 1.0) -> RateLimitDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them.

        When refused, ``retry_after`` is the exact time until ``cost`` tokens are there.
        """
        bucket = self._bucket(key, self._clock())
        if bucket.tokens + 1e-9 >= cost:
            bucket.tokens -= cost
            return self._decision(True, bucket.tokens, 1.0)
        return self._decision(False, bucket.tokens, cost)

    def check(self, key: str = "default", cost: float = 1.0) -> RateLimitDecision:
        """What :meth:`acquire` would answer now, taking nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._decision(cost <= self.burst_size, float(self.burst_size), cost)
        bucket = self._bucket(key, self._clock())
        return self._decision(bucket.tokens + 1e-9 >= cost, bucket.tokens, cost)

    def debit(self, key: str, cost: float) -> RateLimitDecision:
        """Take ``cost`` tokens whatever the balance (it may go negative)."""
        if cost < 0 or not math.isfinite(cost):
            raise ValueError("cost must be a finite number >= 0")
        bucket = self._bucket(key, self._clock())
        bucket.tokens -= cost
        return self._decision(bucket.tokens + 1e-9 >= 1.0, bucket.tokens, 1.0)

    def is_allowed(self, key: str = "default") -> bool:
        """Take one token if there is one; ``True`` when the request may go ahead."""
        return self.acquire(key).allowed

    async def wait(self, key: str = "default", cost: float = 1.0) -> RateLimitDecision:
        """Sleep until ``cost`` tokens are there, then take them (client-side throttling)."""
        while True:
            decision = self.acquire(key, cost)
            if decision.allowed:
                return decision
            if math.isinf(decision.retry_after):
                raise ValueError(f"cost {cost} is more than the burst of {self.burst_size}")
            await asyncio.sleep(decision.retry_after)

    def reset(self, key: str | None = None) -> None:
        """Forget one key's bucket (it is full again), or every bucket."""
        if key is None:
            self._buckets.clear()
        else:
            self._buckets.pop(key, None)


@dataclass(frozen=True)
class TierLimits:
    """One tier: requests per minute and burst, optionally tokens per minute."""

    rpm: float
    burst: int | None = None
    tpm: int | None = None
    tpm_burst: int | None = None

    @classmethod
    def coerce(cls, value: TierLimits | Mapping[str, Any]) -> TierLimits:
        if isinstance(value, TierLimits):
            return value
        unknown = set(value) - {"rpm", "burst", "tpm", "tpm_burst"}
        if unknown:
            raise ValueError(f"unknown tier field(s): {', '.join(sorted(unknown))}")
        if "rpm" not in value:
            raise ValueError("a tier needs 'rpm'")
        return cls(rpm=value["rpm"], burst=value.get("burst"), tpm=value.get("tpm"),
                   tpm_burst=value.get("tpm_burst"))


@dataclass
class _Tier:
    limits: TierLimits
    requests: RateLimiter
    tokens: RateLimiter | None = field(default=None)


@dataclass(frozen=True)
class TierDecision:
    """A request decision under a tier, with the tokens-per-minute bucket's state if it has one."""

    tier: str
    requests: RateLimitDecision
    tokens: RateLimitDecision | None

    @property
    def allowed(self) -> bool:
        return self.requests.allowed and (self.tokens is None or self.tokens.allowed)

    @property
    def retry_after(self) -> float:
        """Seconds until every refusing bucket allows one more request (0.0 when allowed)."""
        waits = [d.retry_after for d in (self.requests, self.tokens) if d is not None and not d.allowed]
        return max(waits, default=0.0)

    @property
    def retry_after_seconds(self) -> int:
        wait = self.retry_after
        return math.ceil(wait - 1e-9) if wait > 0 else 0


class AdvancedRateLimiter:
    """Per-tier limits: each key is limited under the tier its request names.

    ``tiers`` maps a name to ``{"rpm", "burst"}`` (and optionally ``"tpm"``, ``"tpm_burst"``)
    or to a :class:`TierLimits`. A request naming no tier, or one not defined, is limited
    under ``default_tier`` (the first tier when not given).
    """

    def __init__(
        self,
        tiers: Mapping[str, TierLimits | Mapping[str, Any]],
        *,
        default_tier: str | None = None,
        clock: Clock = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tiers: dict[str, _Tier] = {}
        self.default_tier = ""
        self.configure(tiers, default_tier=default_tier)

    def configure(self, tiers: Mapping[str, TierLimits | Mapping[str, Any]], *,
                  default_tier: str | None = None) -> None:
        """Replace the tiers; tiers that keep their name keep their buckets (cut to the new burst)."""
        if not tiers:
            raise ValueError("at least one tier is needed")
        parsed = {name: TierLimits.coerce(value) for name, value in tiers.items()}
        default = default_tier if default_tier is not None else next(iter(parsed))
        if default not in parsed:
            raise ValueError(f"default tier {default!r} is not one of the tiers")
        new: dict[str, _Tier] = {}
        for name, limits in parsed.items():
            old = self._tiers.get(name)
            requests = old.requests if old is not None else RateLimiter(
                limits.rpm, limits.burst, clock=self._clock, max_keys=self._max_keys, name=name)
            requests.configure(limits.rpm, limits.burst)
            tokens = None
            if limits.tpm is not None:
                tokens = old.tokens if old is not None and old.tokens is not None else RateLimiter(
                    limits.tpm, limits.tpm_burst, clock=self._clock, max_keys=self._max_keys,
                    name=name)
                tokens.configure(limits.tpm, limits.tpm_burst)
            new[name] = _Tier(limits, requests, tokens)
        self._tiers, self.default_tier = new, default

    @property
    def tiers(self) -> dict[str, TierLimits]:
        return {name: tier.limits for name, tier in self._tiers.items()}

    def resolve(self, tier: str | None) -> str:
        """The tier a request naming ``tier`` is limited under."""
        return tier if tier is not None and tier in self._tiers else self.default_tier

    def limiter(self, tier: str | None = None) -> RateLimiter:
        """The request-rate limiter of a tier."""
        return self._tiers[self.resolve(tier)].requests

    def acquire(self, key: str = "default", tier: str | None = None,
                cost: float = 1.0) -> TierDecision:
        """Take ``cost`` requests (one, or a batch's items) from ``key``'s bucket under
        ``tier``; refused while the tier's tokens-per-minute bucket (if any) is in debt."""
        name = self.resolve(tier)
        entry = self._tiers[name]
        tokens = entry.tokens.check(key) if entry.tokens is not None else None
        if tokens is not None and not tokens.allowed:
            return TierDecision(name, entry.requests.check(key, cost), tokens)
        return TierDecision(name, entry.requests.acquire(key, cost), tokens)

    def check(self, key: str = "default", tier: str | None = None) -> TierDecision:
        """What :meth:`acquire` would answer now, taking nothing."""
        name = self.resolve(tier)
        entry = self._tiers[name]
        return TierDecision(name, entry.requests.check(key),
                            entry.tokens.check(key) if entry.tokens is not None else None)

    def record_tokens(self, key: str, tokens: int, tier: str | None = None) -> RateLimitDecision | None:
        """Debit ``tokens`` (a finished request's usage) from the tier's tokens-per-minute bucket."""
        entry = self._tiers[self.resolve(tier)]
        if entry.tokens is None or tokens <= 0:
            return None
        return entry.tokens.debit(key, float(tokens))

    def is_allowed(self, key: str = "default", tier: str | None = None) -> bool:
        return self.acquire(key, tier).allowed

    def __len__(self) -> int:
        return sum(len(t.requests) + (len(t.tokens) if t.tokens is not None else 0) for t in self._tiers.values())
