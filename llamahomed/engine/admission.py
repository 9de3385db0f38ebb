"""Backpressure, shared fairly: a bounded queue in front of a worker's slots.

A request takes a slot when one is free and nobody waits; otherwise it waits. Waiting requests
are kept per owner (the token's user): when a slot frees, the owners take turns (round robin),
so one user's burst of requests slows that user down before it holds up anyone else, and one
owner may hold at most ``owner_share`` of the queue's places. A full queue (or a full share)
refuses at once, and a request that waited longer than the queue timeout gives up; both are
503 ``server_busy`` with a ``Retry-After`` computed from how fast sequences finish.

A request for ``n`` choices (sibling sequences of one prompt) enters with ``n`` tickets and
counts as ``n`` sequences: while it waits it holds ``n`` queue places (at most one owner's
share of the queue), and it is let in, all tickets at once, as soon as one slot is free, so
``running`` may pass ``slots`` for a while (the worker queues the siblings that find no slot,
and they share the prompt's KV when they start). Taking the tickets one by one instead would
let two such requests each hold some slots while waiting for the rest: a deadlock until the
queue timeout.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Sequence

from llamahomed.core.errors import ServerBusy

ANONYMOUS = ""


class Admission:
    """Slots and a wait queue for one model's worker."""

    def __init__(self, slots: int, max_queue: int, timeout: float,
                 owner_share: float = 0.5) -> None:
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.timeout = timeout
        self.owner_share = owner_share
        self.running = 0
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._places: dict[asyncio.Future[None], int] = {}  # a waiter's tickets
        self._turns: collections.deque[str] = collections.deque()  # owners with waiters, in turn
        self._durations: collections.deque[float] = collections.deque(maxlen=32)
        self._started: dict[int, float] = {}

    @property
    def waiting(self) -> int:
        """Queue places held: sequences waiting (a request for n choices holds n)."""
        return sum(self._held(queue) for queue in self._waiters.values())

    def _held(self, queue: collections.deque[asyncio.Future[None]]) -> int:
        return sum(self._places.get(future, 1) for future in queue)

    def owner_limit(self) -> int:
        """Queue places one owner may hold (at least one, at most the whole queue)."""
        return max(1, min(self.max_queue, math.ceil(self.max_queue * self.owner_share)))

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

    async def enter(self, ticket: int, owner: str = ANONYMOUS, *,
                    siblings: Sequence[int] = ()) -> None:
        """Take a slot for ``ticket`` (and for its ``siblings``: the module doc), waiting in
        ``owner``'s queue if needed; ServerBusy when it cannot."""
        tickets = [ticket, *siblings]
        if self.running < self.slots and not self._turns:
            self.running += len(tickets)
            self._start(tickets)
            return
        places = min(len(tickets), self.owner_limit())
        if self.waiting + places > self.max_queue:
            raise self._busy(f"the queue for this model is full ({self.waiting} of "
                             f"{self.max_queue} places taken); retry later")
        mine = self._waiters.get(owner)
        held = self._held(mine) if mine is not None else 0
        if held + places > self.owner_limit():
            raise self._busy(f"this token's user already has {held} sequences waiting for "
                             f"this model (its share of the queue is {self.owner_limit()}); "
                             "retry later")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._places[future] = len(tickets)
        if mine is None:
            mine = self._waiters[owner] = collections.deque()
            self._turns.append(owner)
        mine.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            if future.done():  # the slot arrived as the timer fired: keep it
                self._start(tickets)
                return
            self._forget(owner, future)
            raise self._busy(f"waited {self.timeout:g}s in the queue without a free slot; "
                             "retry later") from None
        except asyncio.CancelledError:
            if future.done():
                self.running -= len(tickets)  # handed slots, then cancelled: give them on
                self._wake()
            else:
                self._forget(owner, future)
            raise
        finally:
            self._places.pop(future, None)
        self._start(tickets)  # _wake counted the slots as running

    def _start(self, tickets: list[int]) -> None:
        now = time.monotonic()
        for ticket in tickets:
            self._started[ticket] = now

    def _forget(self, owner: str, future: asyncio.Future[None]) -> None:
        queue = self._waiters.get(owner)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiters[owner]
                self._turns.remove(owner)

    def leave(self, ticket: int) -> None:
        """Give back ``ticket``'s slot and let the next waiter in."""
        started = self._started.pop(ticket, None)
        if started is None:
            return
        self._durations.append(time.monotonic() - started)
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiters, the owners taking turns (the slot counts as running
        from now)."""
        while self._turns and self.running < self.slots:
            owner = self._turns.popleft()
            queue = self._waiters[owner]
            future = queue.popleft()
            if queue:
                self._turns.append(owner)  # back of the line for its next request
            else:
                del self._waiters[owner]
            if not future.done():
                self.running += self._places.get(future, 1)
                future.set_result(None)
