"""llamahome.security: token buckets driven by a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from llamahome.security import AdvancedRateLimiter, RateLimiter, TierLimits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_the_guides_calls_run() -> None:
    limiter = RateLimiter(requests_per_minute=60, burst_size=10)
    assert limiter.acquire("user123").allowed
    tiers = AdvancedRateLimiter(tiers={
        "basic": {"rpm": 60, "burst": 10},
        "pro": {"rpm": 300, "burst": 50},
        "enterprise": {"rpm": 1000, "burst": 100},
    })
    assert tiers.acquire("user123", tier="pro").requests.limit == 50
    assert tiers.tiers["enterprise"] == TierLimits(rpm=1000, burst=100)


def test_the_daemon_uses_these_same_classes() -> None:
    import llamahome.security

    from llamahomed.http import ratelimit

    assert ratelimit.AdvancedRateLimiter is llamahome.security.AdvancedRateLimiter


def test_a_full_bucket_allows_exactly_burst_requests_then_refuses() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=10, clock=clock)
    remaining = [limiter.acquire("u").remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    refused = limiter.acquire("u")
    assert not refused.allowed and refused.remaining == 0


def test_retry_after_is_the_time_until_one_token_is_back_not_a_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=10, clock=clock)  # 1 token/s
    for _ in range(10):
        limiter.acquire("u")
    assert limiter.acquire("u").retry_after == pytest.approx(1.0)
    clock.advance(0.25)
    refused = limiter.acquire("u")
    assert refused.retry_after == pytest.approx(0.75)
    assert refused.retry_after_seconds == 1
    clock.advance(0.75)
    assert limiter.acquire("u").allowed
    assert not limiter.acquire("u").allowed


def test_refill_is_exact_and_capped_at_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=30, burst_size=5, clock=clock)  # 0.5 token/s
    for _ in range(5):
        limiter.acquire("u")
    clock.advance(4.0)  # two tokens back
    assert [limiter.acquire("u").allowed for _ in range(3)] == [True, True, False]
    clock.advance(3600)
    assert limiter.check("u").remaining == 5
    decision = limiter.acquire("u")
    assert decision.remaining == 4 and decision.reset == pytest.approx(2.0)


def test_slow_rates_give_long_exact_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=2, burst_size=1, clock=clock)  # one per 30 s
    assert limiter.acquire("u").allowed
    clock.advance(12.5)
    refused = limiter.acquire("u")
    assert refused.retry_after == pytest.approx(17.5) and refused.retry_after_seconds == 18
    assert refused.window == 30


def test_keys_have_separate_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=1, clock=clock)
    assert limiter.acquire("alice").allowed
    assert not limiter.acquire("alice").allowed
    assert limiter.acquire("bob").allowed


def test_check_takes_nothing() -> None:
    limiter = RateLimiter(requests_per_minute=60, burst_size=2, clock=FakeClock())
    assert limiter.check("u").remaining == 2
    assert limiter.check("u").remaining == 2
    assert limiter.acquire("u").remaining == 1


def test_burst_defaults_to_a_minute_and_bad_limits_are_refused() -> None:
    assert RateLimiter(requests_per_minute=90).burst_size == 90
    for rpm, burst in ((0, 1), (-5, 1), (float("nan"), 1), (60, 0)):
        with pytest.raises(ValueError):
            RateLimiter(requests_per_minute=rpm, burst_size=burst)


def test_a_cost_above_the_burst_can_never_be_met() -> None:
    limiter = RateLimiter(requests_per_minute=60, burst_size=3, clock=FakeClock())
    refused = limiter.acquire("u", cost=4)
    assert not refused.allowed and refused.retry_after == float("inf")


def test_idle_buckets_are_dropped_and_memory_is_capped() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=10, clock=clock, max_keys=100)
    for i in range(50):
        limiter.acquire(f"user{i}")
    assert len(limiter) == 50
    clock.advance(1.0)  # one token back: every bucket is full again, so idle
    limiter.acquire("newcomer")
    assert len(limiter) == 1
    for i in range(1000):
        limiter.acquire(f"flood{i}")
    assert len(limiter) == 100
    # the most recent keys kept their (spent) state
    assert limiter.check("flood999").remaining == 9


def test_lowering_the_limit_cuts_full_buckets_to_the_new_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=10, clock=clock)
    limiter.acquire("u")
    limiter.configure(requests_per_minute=6, burst_size=2)
    assert limiter.acquire("u").remaining == 1
    assert limiter.acquire("u").remaining == 0
    assert limiter.acquire("u").retry_after == pytest.approx(10.0)


def test_debit_may_go_into_debt_and_retry_after_counts_the_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, burst_size=10, clock=clock)
    after = limiter.debit("u", 25)  # 10 - 25 = -15 tokens
    assert not after.allowed and after.remaining == 0
    assert limiter.check("u").retry_after == pytest.approx(16.0)
    clock.advance(16.0)
    assert limiter.check("u").allowed


def test_tiers_select_their_own_limits() -> None:
    clock = FakeClock()
    limiter = AdvancedRateLimiter(tiers={"basic": {"rpm": 60, "burst": 2},
                                         "pro": {"rpm": 600, "burst": 5}}, clock=clock)
    assert [limiter.acquire("a", "basic").allowed for _ in range(3)] == [True, True, False]
    assert [limiter.acquire("a", "pro").allowed for _ in range(6)] == [True] * 5 + [False]
    refused = limiter.acquire("a", "pro")
    assert refused.tier == "pro" and refused.retry_after == pytest.approx(0.1)


def test_no_tier_or_an_unknown_tier_uses_the_default() -> None:
    limiter = AdvancedRateLimiter(tiers={"basic": {"rpm": 60, "burst": 1}, "pro": {"rpm": 60}},
                                  default_tier="basic", clock=FakeClock())
    assert limiter.acquire("a", "gold").tier == "basic"
    assert not limiter.acquire("a").allowed  # same bucket as the unknown tier's request
    with pytest.raises(ValueError):
        AdvancedRateLimiter(tiers={"basic": {"rpm": 60}}, default_tier="pro")
    with pytest.raises(ValueError):
        AdvancedRateLimiter(tiers={"basic": {"rpm": 60, "bursts": 3}})


def test_tokens_per_minute_are_debited_after_the_fact() -> None:
    clock = FakeClock()
    limiter = AdvancedRateLimiter(tiers={"basic": {"rpm": 600, "burst": 100, "tpm": 120}},
                                  clock=clock)  # 2 tokens/s
    first = limiter.acquire("a")
    assert first.allowed and first.tokens is not None and first.tokens.remaining == 120
    limiter.record_tokens("a", 100)
    assert limiter.acquire("a").allowed  # 20 tokens left: not in debt
    limiter.record_tokens("a", 50)  # -30 tokens
    refused = limiter.acquire("a")
    assert not refused.allowed and refused.requests.allowed
    assert refused.retry_after == pytest.approx(15.5)  # (1 - (-30)) / 2
    assert refused.retry_after_seconds == 16
    assert refused.requests.remaining == 98  # a refused request took no request token
    clock.advance(15.5)
    assert limiter.acquire("a").allowed


def test_reconfiguring_tiers_keeps_buckets_of_tiers_that_stay() -> None:
    clock = FakeClock()
    limiter = AdvancedRateLimiter(tiers={"basic": {"rpm": 60, "burst": 3}}, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    limiter.configure({"basic": {"rpm": 60, "burst": 3}, "pro": {"rpm": 300, "burst": 50}})
    assert limiter.acquire("a").requests.remaining == 0


async def test_wait_sleeps_just_long_enough() -> None:
    limiter = RateLimiter(requests_per_minute=6000, burst_size=1)  # one per 10 ms
    loop = asyncio.get_running_loop()
    await limiter.wait("u")
    started = loop.time()
    decision = await limiter.wait("u")
    assert decision.allowed
    assert loop.time() - started >= 0.005
    with pytest.raises(ValueError):
        await limiter.wait("u", cost=2)
