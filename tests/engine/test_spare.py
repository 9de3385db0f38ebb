"""The spare worker: started ahead, taken by the next load, replaced; harmless when it dies;
nothing left after close (real worker processes, the tiny model)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.pool import WorkerPool
from llamahomed.engine.protocol import Done, SamplingParams
from llamahomed.engine.spare import SpareKeeper


def config(path: Path, model_id: str = "tiny") -> LoadConfig:
    return LoadConfig(model_id=model_id, model_path=str(path), n_ctx=256, n_batch=64,
                      n_threads=1, n_gpu_layers=0, n_slots=2, engine="batched")


def make_pool(enabled: list[bool] | None = None) -> WorkerPool:
    flag = enabled if enabled is not None else [True]
    return WorkerPool(start_timeout=60, keep_alive=lambda: 300.0,
                      spare=SpareKeeper(lambda: flag[0]))


async def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}


async def generate(pool: WorkerPool, load: LoadConfig) -> str:
    worker = await pool.acquire(load)
    stream = await worker.submit("hello there", SamplingParams(max_tokens=4, temperature=0))
    events = [event async for event in stream.events()]
    assert isinstance(events[-1], Done)
    return "".join(getattr(e, "text", "") for e in events)


async def test_a_load_takes_the_spare_started_before_it_and_a_new_one_replaces_it(
        tiny_model_file: Path) -> None:
    before = children()
    pool = make_pool()
    pool.spare.refresh()
    try:
        await wait_for(lambda: pool.spare.pid is not None)
        spare_pid = pool.spare.pid
        assert spare_pid is not None
        assert pool.workers() == {}  # a spare is not a loaded model
        asked = time.time()
        text = await generate(pool, config(tiny_model_file))
        worker = pool.workers()["tiny"]
        assert worker.pid == spare_pid and worker.from_spare
        assert psutil.Process(spare_pid).create_time() < asked
        assert text
        await wait_for(lambda: pool.spare.pid is not None)
        assert pool.spare.pid != spare_pid and pool.spare.taken == 1
    finally:
        await pool.close()
    assert children() - before == set()


async def test_killing_the_spare_is_harmless_and_it_is_replaced(tiny_model_file: Path) -> None:
    before = children()
    pool = make_pool()
    pool.spare.refresh()
    try:
        await wait_for(lambda: pool.spare.pid is not None)
        first = pool.spare.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: pool.spare.pid not in (None, first))
        assert await generate(pool, config(tiny_model_file))
        assert pool.workers()["tiny"].from_spare
    finally:
        await pool.close()
    assert children() - before == set()


async def test_a_spare_dead_at_take_time_falls_back_to_a_fresh_worker(
        tiny_model_file: Path) -> None:
    """The spare dies after the keeper handed it out, before it read its config."""
    pool = make_pool()
    pool.spare.refresh()
    try:
        await wait_for(lambda: pool.spare.pid is not None)
        spare = pool.spare.take()
        assert spare is not None
        spare.process.send_signal(signal.SIGKILL)
        await spare.process.wait()
        from llamahomed.engine.handle import WorkerHandle

        worker = WorkerHandle(config(tiny_model_file))
        await worker.start(60, spare)
        try:
            assert worker.alive and not worker.from_spare and worker.pid != spare.pid
        finally:
            await worker.stop()
    finally:
        await pool.close()


async def test_turning_the_setting_off_stops_the_spare_and_loads_start_fresh(
        tiny_model_file: Path) -> None:
    before = children()
    flag = [True]
    pool = make_pool(flag)
    pool.spare.refresh()
    try:
        await wait_for(lambda: pool.spare.pid is not None)
        spare_pid = pool.spare.pid
        flag[0] = False
        pool.spare.refresh()  # what a config reload does
        await wait_for(lambda: not psutil.pid_exists(spare_pid)
                       or psutil.Process(spare_pid).status() == psutil.STATUS_ZOMBIE)
        assert pool.spare.pid is None
        await generate(pool, config(tiny_model_file))
        assert not pool.workers()["tiny"].from_spare
        await asyncio.sleep(0.3)
        assert pool.spare.pid is None  # none started after the load either
    finally:
        await pool.close()
    assert children() - before == set()


async def test_a_spare_exits_by_itself_when_its_socket_closes() -> None:
    """The daemon dying closes every worker socket: a waiting spare then exits (code 0)."""
    from llamahomed.engine.spare import spawn_worker

    spare = await spawn_worker()
    spare.writer.close()
    assert await asyncio.wait_for(spare.process.wait(), 60) == 0


@pytest.mark.parametrize("enabled", [True, False])
async def test_close_leaves_no_process(tiny_model_file: Path, enabled: bool) -> None:
    before = children()
    pool = make_pool([enabled])
    pool.spare.refresh()
    await generate(pool, config(tiny_model_file))
    await pool.close()
    assert children() - before == set()


async def test_a_spare_started_ahead_is_adopted_or_killed_when_the_setting_is_off() -> None:
    """``llamahomed start`` starts a spare before the pool exists; the pool keeps it, unless
    spare_worker is off, and then it is killed."""
    from llamahomed.engine.spare import spawn_worker

    kept = WorkerPool(start_timeout=60, keep_alive=lambda: 300.0, spare=SpareKeeper(lambda: True))
    early = await spawn_worker()
    kept.spare.adopt(early)
    assert kept.spare.pid == early.pid and early.adopted
    await kept.close()
    assert early.process.returncode is not None

    off = WorkerPool(start_timeout=60, keep_alive=lambda: 300.0, spare=SpareKeeper(lambda: False))
    other = await spawn_worker()
    off.spare.adopt(other)
    assert off.spare.pid is None
    await off.close()
    assert other.process.returncode is not None
