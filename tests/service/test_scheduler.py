"""Several models on one machine, with real llama.cpp workers on tiny GGUF models: the scheduler
keeps what fits, evicts idle models least recently used first, makes a request wait while busy
models hold the memory, refuses with a 507 naming them past the bounded wait, and honours
max_loaded_models and per-request keep_alive.

The machine is simulated (``service.read_machine``) with RAM for a chosen number of these
models, so the decisions do not depend on what else this machine is doing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llamahomed.core.config_store import ConfigStore
from llamahomed.core.errors import ModelTooLarge
from llamahomed.core.resources import Machine, simulated_machine
from llamahomed.service.inference import InferenceService
from llamahomed.service.options import GenerationOptions
from tests.conftest import TINY_MODEL_ID
from tests.fixtures.tiny_gguf import write_tiny_llama

GiB = 2**30
A, B, C = TINY_MODEL_ID, "tiny-b", "tiny-c"


def add_models(models_dir: Path, *names: str) -> None:
    for seed, name in enumerate(names, start=1):
        write_tiny_llama(models_dir / f"{name}.gguf", name=name, seed=seed)


def machine_for(service: InferenceService, models: float) -> Machine:
    """A machine whose RAM budget holds ``models`` of the tiny models (after the reserve)."""
    big = simulated_machine(ram=64 * GiB, cores=1)
    need = max(service.plan(service.candidates(m), big).memory_required or 0 for m in (A, B))
    reserve = service.config.settings.system_settings.ram_reserve_bytes
    return simulated_machine(ram=reserve + int(need * models), cores=1)


@pytest.fixture
async def closing(make_settings: Callable[..., Any]) -> AsyncIterator[
        Callable[..., InferenceService]]:
    """Builds services on a simulated machine holding ``models`` tiny models; closes them."""
    services: list[InferenceService] = []

    def build(models: float, **system: Any) -> InferenceService:
        settings = make_settings(system_settings={"n_threads": 1, "n_slots": 2, **system})
        service = InferenceService.create(ConfigStore(settings))
        machine = machine_for(service, models)
        service.read_machine = lambda: machine
        services.append(service)
        return service

    yield build
    for service in services:
        await service.close()


async def ask(service: InferenceService, model: str, **options: Any) -> str:
    keep_alive = options.pop("keep_alive", None)
    generation = await service.generate(
        GenerationOptions(model=model, max_tokens=2, temperature=0, **options), prompt="the cat",
        keep_alive=keep_alive)
    return (await generation.result()).text


def loaded(service: InferenceService) -> set[str]:
    return set(service.pool.workers())


@contextmanager
def stopped(service: InferenceService, model: str) -> Iterator[None]:
    """The model's worker process paused (SIGSTOP): a request sent to it stays in flight."""
    pid = service.pool.workers()[model].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_models_that_fit_together_stay_loaded_and_the_least_recently_used_idle_one_makes_room(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B, C)
    service = closing(2.5)
    await ask(service, A)
    await ask(service, B)
    assert loaded(service) == {A, B}  # room for both: both stay
    await ask(service, A)  # A is now the more recently used
    await ask(service, C)
    assert loaded(service) == {A, C}  # B, least recently used, was evicted; A kept
    held = service.pool.workers()[A].held
    assert held.measured and held.ram > 0


async def test_an_idle_model_is_evicted_for_one_that_does_not_fit_beside_it(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(1.5)
    await ask(service, A)
    await ask(service, B)
    assert loaded(service) == {B}
    plan = service.plan(service.candidates(A), service.read_machine())
    assert plan.choice is not None  # alone, A fits this machine: it was memory, not size


async def test_max_loaded_models_evicts_even_when_memory_would_hold_both(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(4, max_loaded_models=1)
    await ask(service, A)
    await ask(service, B)
    assert loaded(service) == {B}


async def test_a_request_waits_while_a_busy_model_holds_the_memory_then_proceeds(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(1.5, load_wait_timeout=60)
    await ask(service, A)
    with stopped(service, A):
        busy = asyncio.create_task(ask(service, A))  # in flight on the paused worker
        await until(lambda: not service.pool.workers()[A].idle)
        waiting = asyncio.create_task(ask(service, B))
        await until(lambda: bool(service.scheduler.waiting()))
        (waiter,) = service.scheduler.waiting()
        assert (waiter.model, waiter.reason, waiter.holders) == (B, "memory", (A,))
        await asyncio.sleep(0.3)
        assert not waiting.done() and loaded(service) == {A}
    await asyncio.wait_for(busy, 30)  # A finishes its request ...
    await asyncio.wait_for(waiting, 30)  # ... is evicted, and B loads and answers
    assert loaded(service) == {B} and not service.scheduler.waiting()


async def test_past_the_bounded_wait_the_507_names_what_holds_the_memory(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(1.5, load_wait_timeout=0.5)
    await ask(service, A)
    with stopped(service, A):
        busy = asyncio.create_task(ask(service, A))
        await until(lambda: not service.pool.workers()[A].idle)
        with pytest.raises(ModelTooLarge) as refused:
            await ask(service, B)
    await asyncio.wait_for(busy, 30)
    error = refused.value
    assert error.status == 507 and error.code == "model_too_large"
    assert repr(A) in error.message and "load_wait_timeout" in error.message
    (holder,) = error.details["held_by"]
    assert holder["model"] == A and holder["running"] == 1 and holder["ram_bytes"] > 0
    assert error.details["reason"] == "memory" and error.details["waited_s"] >= 0.5
    assert error.headers["Retry-After"]
    assert loaded(service) == {A} and not service.scheduler.waiting()


async def test_a_model_too_large_even_alone_is_refused_at_once_not_after_the_wait(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(0.5, load_wait_timeout=60)
    with pytest.raises(ModelTooLarge) as refused:
        await asyncio.wait_for(ask(service, A), 10)
    assert "no variant fits" in refused.value.message


async def test_keep_alive_per_request_zero_negative_and_the_unload_call(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(4, keep_alive=0.3)
    await ask(service, A, keep_alive=-1)  # stays although the setting says 0.3 s
    await ask(service, B, keep_alive=0)  # unloads as soon as it is idle
    await until(lambda: B not in loaded(service))
    worker = service.pool.workers()[A]
    assert service.pool.expires_at(worker) is None and service.pool.keep_alive_of(worker) == -1
    state = service.scheduler.state(worker)
    assert state["state"] == "idle" and state["expires_at"] is None and state["keep_alive_s"] == -1
    await ask(service, A, keep_alive=600)
    expires = service.pool.expires_at(service.pool.workers()[A])
    assert expires is not None and 590 < expires - time.time() <= 600
    assert await service.unload(A) is True
    assert loaded(service) == set() and await service.unload(A) is False


async def test_concurrent_requests_alternating_two_models_that_fit_one_at_a_time_all_answer(
        closing: Callable[..., InferenceService], models_dir: Path) -> None:
    add_models(models_dir, B)
    service = closing(1.5, load_wait_timeout=120)
    results = await asyncio.wait_for(asyncio.gather(
        *(ask(service, (A, B)[i % 2]) for i in range(6)), return_exceptions=True), 240)
    assert all(isinstance(r, str) for r in results), results
    assert len(loaded(service)) == 1 and not service.scheduler.waiting()
