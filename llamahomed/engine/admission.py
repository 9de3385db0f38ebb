"""Backpressure: a bounded queue in front of a worker's slots.

A request takes a slot when one is free; otherwise it waits in a FIFO queue of bounded length.
A full queue refuses at once, and a request that waited longer than the queue timeout gives up;
both are 503 ``server_busy`` with a ``Retry-After`` computed from how fast sequences finish.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time

from llamahomed.core.errors import ServerBusy


class Admission:
    """Slots and a wait queue for one model's worker."""

    def __init__(self, slots: int, max_queue: int, timeout: float) -> None:
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.timeout = timeout
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._durations: collections.deque[float] = collections.deque(maxlen=32)
        self._started: dict[int, float] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: queued waves x the mean sequence time."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        now = time.monotonic()
        oldest = min(self._started.values(), default=now)
        first_free = max(0.0, mean - (now - oldest))
        waves = self.waiting // self.slots
        return max(1, math.ceil(first_free + waves * mean))

    def _busy(self, why: str) -> ServerBusy:
        seconds = self.retry_after()
        return ServerBusy(why, details={"retry_after": seconds, "running": self.running,
                                        "queued": self.waiting, "slots": self.slots,
                                        "max_queue": self.max_queue},
                          headers={"Retry-After": str(seconds)})

    async def enter(self, ticket: int) -> None:
        """Take a slot for ``ticket``, waiting in the queue if needed; ServerBusy when it cannot."""
        if self.running < self.slots and not self._waiters:
            self.running += 1
            self._started[ticket] = time.monotonic()
            return
        if self.waiting >= self.max_queue:
            raise self._busy(f"the queue for this model is full ({self.max_queue} waiting); "
                             "retry later")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            if future.done():  # the slot arrived as the timer fired: keep it
                self._started[ticket] = time.monotonic()
                return
            self._waiters.remove(future)
            raise self._busy(f"waited {self.timeout:g}s in the queue without a free slot; "
                             "retry later") from None
        except asyncio.CancelledError:
            if future.done():
                self.running -= 1  # handed a slot, then cancelled: give it on
                self._wake()
            else:
                self._waiters.remove(future)
            raise
        self._started[ticket] = time.monotonic()  # _wake counted the slot as running

    def leave(self, ticket: int) -> None:
        """Give back ``ticket``'s slot and let the next waiter in."""
        started = self._started.pop(ticket, None)
        if started is None:
            return
        self._durations.append(time.monotonic() - started)
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the oldest waiters (the slot counts as running from now)."""
        while self._waiters and self.running < self.slots:
            future = self._waiters.popleft()
            if not future.done():
                self.running += 1
                future.set_result(None)
