"""The bounded queue in front of a worker's slots."""

from __future__ import annotations

import asyncio

import pytest

from llamahomed.engine.admission import Admission
from llamahomed.core.errors import ServerBusy


async def test_slots_then_fifo_queue_then_refusal() -> None:
    gate = Admission(slots=2, max_queue=1, timeout=5)
    await gate.enter(1)
    await gate.enter(2)
    assert (gate.running, gate.waiting) == (2, 0)
    third = asyncio.create_task(gate.enter(3))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(ServerBusy) as refused:
        await gate.enter(4)
    assert refused.value.details["queued"] == 1
    assert int(refused.value.headers["Retry-After"]) >= 1
    gate.leave(1)
    await third
    assert (gate.running, gate.waiting) == (2, 0)
    gate.leave(2)
    gate.leave(3)
    assert gate.running == 0


async def test_a_waiter_that_times_out_gets_server_busy_and_leaves_the_queue() -> None:
    gate = Admission(slots=1, max_queue=4, timeout=0.05)
    await gate.enter(1)
    with pytest.raises(ServerBusy, match="waited"):
        await gate.enter(2)
    assert gate.waiting == 0 and gate.running == 1


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    gate = Admission(slots=1, max_queue=4, timeout=5)
    await gate.enter(1)
    waiter = asyncio.create_task(gate.enter(2))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.leave(1)
    assert (gate.running, gate.waiting) == (0, 0)
    await gate.enter(3)
    assert gate.running == 1


async def test_retry_after_grows_with_the_queue() -> None:
    gate = Admission(slots=1, max_queue=10, timeout=5)
    await gate.enter(1)
    gate._durations.extend([2.0, 2.0])
    short = gate.retry_after()
    waiters = [asyncio.create_task(gate.enter(i)) for i in range(2, 5)]
    await asyncio.sleep(0)
    assert gate.retry_after() >= short + 4
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_n_choices_count_as_n_sequences_and_never_deadlock() -> None:
    """Siblings enter together: let in as soon as one slot is free (running may pass the
    slots: the worker queues the rest), holding n queue places while they wait."""
    gate = Admission(slots=2, max_queue=6, timeout=5, owner_share=1.0)
    await gate.enter(1, "a", siblings=[2, 3])
    assert (gate.running, gate.waiting) == (3, 0)
    second = asyncio.create_task(gate.enter(4, "b", siblings=[5, 6, 7]))
    await asyncio.sleep(0)
    assert gate.waiting == 4
    with pytest.raises(ServerBusy, match="full"):  # 4 + 3 places > 6
        await gate.enter(8, "c", siblings=[9, 10])
    gate.leave(1)
    await asyncio.sleep(0)
    assert not second.done() and gate.running == 2  # no slot free yet
    gate.leave(2)  # one slot free: all four siblings go in at once
    await second
    assert (gate.running, gate.waiting) == (5, 0)
    gate.leave(3)
    for ticket in (4, 5, 6, 7):
        gate.leave(ticket)
    assert gate.running == 0


async def test_an_owners_share_counts_the_places_its_choices_hold() -> None:
    gate = Admission(slots=1, max_queue=8, timeout=5, owner_share=0.5)  # 4 places each
    await gate.enter(1, "a")
    waiting = asyncio.create_task(gate.enter(2, "a", siblings=[3, 4]))
    await asyncio.sleep(0)
    with pytest.raises(ServerBusy, match="share"):  # 3 held + 2 asked > 4
        await gate.enter(5, "a", siblings=[6])
    other = asyncio.create_task(gate.enter(7, "b", siblings=[8, 9, 10]))
    await asyncio.sleep(0)
    assert gate.waiting == 7
    waiting.cancel()
    other.cancel()
    await asyncio.gather(waiting, other, return_exceptions=True)
    assert gate.waiting == 0
