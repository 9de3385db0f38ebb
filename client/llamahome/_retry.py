"""Error recovery: :class:`RetryHandler` and :class:`CircuitBreaker` (exported by ``llamahome.error``).

Both are decision makers that do no I/O of their own: ``RetryHandler.delay_for``
says whether and how long to wait before repeating a failed call,
``CircuitBreaker.before_call`` / ``record`` keep the breaker's state. The two
small loops :meth:`RetryHandler.run` (async) and :meth:`RetryHandler.run_sync`
apply them around any call; the clients send every request through them.

What is retried (everything else is raised at once):

- an error whose envelope code :data:`llamahome.codes.CODES` marks ``retryable``:
  429 (``rate_limit_exceeded``, ``too_many_streams``), 503 (``server_busy``,
  ``shutting_down``), ``internal_error``, ``worker_crashed``, ``download_failed`` and
  ``download_interrupted``. Never what fails the same way every time: 4xx other than 429,
  507 (``model_too_large``, ``insufficient_storage``), ``model_load_failed``,
  ``quantize_failed``, ``download_not_found``, ``digest_mismatch``, ``not_gguf``;
- a code not in the table (a newer daemon, a proxy) by its HTTP status:
  429, 500, 502, 503 and 504 (:data:`llamahome.codes.RETRYABLE_STATUSES`);
- connection errors (refused, reset, the daemon restarting), not timeouts
  unless ``retry_timeouts`` is set: a timed-out generation would only run again.

A stream is only retried while it opens: once its first byte arrived, a
failure is raised (the text already yielded cannot be taken back).

The wait is the server's ``retry_after`` (from ``details.retry_after``,
``retry-after-ms`` or ``Retry-After``) plus up to 10% jitter, never less than it
asked; a server asking for more than ``max_retry_after`` seconds is not retried.
Without a hint it is ``backoff_factor * 2**attempt`` seconds, capped at
``max_backoff``, minus up to 25% jitter (the OpenAI SDK's schedule).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from ._errors import APIConnectionError, APIError, APITimeoutError, CircuitOpenError
from .codes import is_retryable

__all__ = ["CircuitBreaker", "RetryHandler"]

T = TypeVar("T")


def _retry_after(error: BaseException) -> float | None:
    value = getattr(error, "retry_after", None)
    return value if isinstance(value, (int, float)) else None


class RetryHandler:
    """Repeats a failed call when that is safe, with exponential backoff and jitter.

    ``max_retries`` is the number of repeats (so at most ``max_retries + 1``
    attempts); ``backoff_factor`` the first wait in seconds, doubled on each
    repeat. Use it through a client (``APIClient(retry=handler)``) or around
    any call: ``await handler.run(lambda: client.process_prompt("Hi"))``.
    """

    def __init__(
        self,
        max_retries: int = 2,
        backoff_factor: float = 0.5,
        *,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        retry_timeouts: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if backoff_factor < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ValueError("backoff_factor, max_backoff and max_retry_after must be >= 0")
        self.max_retries = max_retries
        self.backoff_factor = float(backoff_factor)
        self.max_backoff = float(max_backoff)
        self.max_retry_after = float(max_retry_after)
        self.retry_timeouts = retry_timeouts
        self._random = rng or random.Random()

    def __repr__(self) -> str:
        return (
            f"RetryHandler(max_retries={self.max_retries}, "
            f"backoff_factor={self.backoff_factor})"
        )

    def is_retryable(self, error: BaseException) -> bool:
        """Whether repeating the call that raised ``error`` is safe and may help."""
        if not isinstance(error, APIError) or isinstance(error, CircuitOpenError):
            return False
        if isinstance(error, APITimeoutError):
            return self.retry_timeouts
        if isinstance(error, APIConnectionError):
            return True
        return is_retryable(error.code, error.status)

    def delay_for(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before repeat number ``attempt + 1``; ``None``: do not repeat."""
        if attempt >= self.max_retries or not self.is_retryable(error):
            return None
        hint = _retry_after(error)
        if hint is not None:
            if hint > self.max_retry_after:
                return None
            return hint * (1.0 + 0.1 * self._random.random())
        base = min(self.max_backoff, self.backoff_factor * 2.0**attempt)
        return base * (1.0 - 0.25 * self._random.random())

    async def run(
        self, call: Callable[[], Awaitable[T]], *, breaker: CircuitBreaker | None = None
    ) -> T:
        """Await ``call()`` until it succeeds or fails in a way not worth repeating."""
        attempt = _Attempt(self, breaker)
        while True:
            with attempt:
                return await call()
            await asyncio.sleep(attempt.delay)

    def run_sync(self, call: Callable[[], T], *, breaker: CircuitBreaker | None = None) -> T:
        """:meth:`run` for blocking code: ``call()`` is a plain function."""
        attempt = _Attempt(self, breaker)
        while True:
            with attempt:
                return call()
            time.sleep(attempt.delay)


class _Attempt:
    """One try of :meth:`RetryHandler.run`: asks the breaker first, records the outcome after,
    and swallows a failure worth repeating (leaving the wait in ``delay``)."""

    def __init__(self, handler: RetryHandler, breaker: CircuitBreaker | None) -> None:
        self.handler = handler
        self.breaker = breaker
        self.number = 0
        self.delay = 0.0

    def __enter__(self) -> None:
        if self.breaker is not None:
            self.breaker.before_call()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if self.breaker is not None:
            self.breaker.record(exc)
        if exc is None:
            return False
        delay = self.handler.delay_for(exc, self.number)
        if delay is None:
            return False
        self.number += 1
        self.delay = delay
        return True


class CircuitBreaker:
    """Stops calling a daemon that keeps failing, then lets one trial call through.

    ``closed``: calls go through; ``failure_threshold`` failures in a row open
    it. ``open``: calls fail at once with :class:`CircuitOpenError` for
    ``reset_timeout`` seconds. ``half_open``: one trial call goes through
    (others are refused meanwhile); its success closes the breaker, its
    failure opens it again. Failures are timeouts, connection errors and 5xx
    replies that may pass when repeated (retryable in :data:`llamahome.codes.CODES`,
    or an unknown code with a retryable status); a 4xx reply (bad request, rate
    limit, auth) or a final 5xx (``507 model_too_large``, ``model_load_failed``,
    ``digest_mismatch``, ...) shows the daemon is up and answering, and counts as
    a success. Thread-safe, so one breaker may guard a
    :class:`~llamahome.client.SyncClient` shared by threads.
    """

    CLOSED: Final = "closed"
    OPEN: Final = "open"
    HALF_OPEN: Final = "half_open"

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or failure_threshold < 1:
            raise ValueError("failure_threshold must be 1 or more")
        if reset_timeout < 0:
            raise ValueError("reset_timeout must be >= 0 seconds")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} failures={self.failures}>"

    @property
    def failures(self) -> int:
        """Failures in a row counted so far."""
        return self._failures

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return self.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return self.HALF_OPEN
        return self.OPEN

    @staticmethod
    def counts(error: BaseException) -> bool:
        """Whether ``error`` counts as a failure of the daemon."""
        if isinstance(error, CircuitOpenError):
            return False
        if isinstance(error, APIConnectionError):
            return True
        return (isinstance(error, APIError) and error.status is not None and error.status >= 500
                and is_retryable(error.code, error.status))

    def before_call(self) -> None:
        """Raise :class:`CircuitOpenError` unless a call may go out now."""
        with self._lock:
            state = self._state()
            if state == self.CLOSED:
                return
            if state == self.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            assert self._opened_at is not None
            wait = max(0.0, self._opened_at + self.reset_timeout - self._clock())
        raise CircuitOpenError(
            f"circuit breaker is open after {self._failures} failures in a row; "
            f"not calling the daemon for {wait:.1f} s",
            retry_after=wait,
        )

    def record(self, error: BaseException | None) -> None:
        """The outcome of a call let through by :meth:`before_call` (``None``: success)."""
        with self._lock:
            trial, self._trial_running = self._trial_running, False
            if error is None or (isinstance(error, APIError) and not self.counts(error)):
                self._failures, self._opened_at = 0, None
            elif self.counts(error):
                self._failures += 1
                if trial or self._failures >= self.failure_threshold:
                    self._opened_at = self._clock()
            # Anything else (cancelled, a bug in the caller) says nothing about the daemon.

    def reset(self) -> None:
        """Close the breaker and forget past failures."""
        with self._lock:
            self._failures, self._opened_at, self._trial_running = 0, None, False
