"""Which models are loaded together: fit alongside, evict idle ones (LRU), wait, or refuse.

Every load goes through :meth:`Scheduler.acquire`, one decision at a time:

1. the model is planned on the machine as it would be with every *idle* loaded model evicted
   (the best load it can get now without waiting); each loaded model counts as holding what its
   load allocated (:class:`~llamahomed.engine.handle.Held`: llama.cpp's buffers at its load, or
   the plan's estimate), on top of what the machine reading says;
2. the fewest idle models are evicted, least recently used first, for which the model still
   loads exactly that way (so a model never loads with a smaller context or fewer GPU layers
   just to squeeze in beside an idle one), and for which at most ``max_loaded_models`` remain;
3. when nothing fits even so but would with the busy models gone (or ``max_loaded_models`` busy
   models are loaded), the request waits, visible in ``/api/v1/status``, until they finish and
   can be evicted, at most ``load_wait_timeout`` seconds; then a 507 names what holds the memory;
4. a model that would not fit with every model evicted is refused at once (the planner's 507).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from llamahomed.core.errors import LlamaHomeError, ModelTooLarge
from llamahomed.core.resources import Machine
from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import Held, WorkerHandle
from llamahomed.engine.pool import WorkerPool
from llamahomed.planner import Estimate, Option, Plan

log = structlog.get_logger(__name__)
GiB = 2**30
POLL_S = 0.2  # how often a waiting request looks again


def default_max_loaded(machine: Machine) -> int:
    """3 per GPU, 3 without GPUs: Ollama's default for OLLAMA_MAX_LOADED_MODELS, which keeps
    a chat model, an embedding model and a code model loaded on one device."""
    return 3 * max(1, len(machine.gpus))


def held_by(estimate: Estimate, buffers: Mapping[str, Mapping[str, int]] | None,
            machine: Machine) -> Held:
    """What a load holds: llama.cpp's reported buffers per device (plus the estimate's runtime
    overhead) when they match the plan's devices, else the plan's estimate. On unified memory
    the GPU's share comes out of RAM as well."""
    ram, vram = estimate.cpu.total, tuple(g.total for g in estimate.gpus)
    measured = False
    if buffers:
        gpus = [sum(v.values()) for k, v in sorted(buffers.items()) if k != "CPU"]
        if len(gpus) == len(estimate.gpus):
            ram = sum(buffers.get("CPU", {}).values()) + estimate.cpu.overhead
            vram = tuple(b + g.overhead for b, g in zip(gpus, estimate.gpus))
            measured = True
    if machine.apple:
        ram += sum(vram)
    return Held(ram, vram, measured)


def view(machine: Machine, held: Mapping[str, Held], evicted: frozenset[str]) -> Machine:
    """``machine`` as a new load would find it with ``evicted`` unloaded: free memory is the
    reading plus what the evicted models hold, and never more than the total less what the
    models that stay hold (their pages may read as "available" when they are mapped files)."""
    kept = [h for k, h in held.items() if k not in evicted]
    freed = [h for k, h in held.items() if k in evicted]
    ram = min(machine.ram_available + sum(h.ram for h in freed),
              machine.ram_total - sum(h.ram for h in kept))
    gpus = tuple(replace(g, free=max(0, min(
        g.free + sum(h.vram[i] for h in freed if i < len(h.vram)),
        g.total - sum(h.vram[i] for h in kept if i < len(h.vram)))))
        for i, g in enumerate(machine.gpus))
    notes = machine.notes
    if kept:
        taken = sum(h.ram + sum(h.vram) for h in kept)
        notes += (f"{len(kept)} loaded model(s) hold {taken / GiB:.2f} GiB "
                  f"({', '.join(sorted(k for k in held if k not in evicted))})",)
    return replace(machine, ram_available=max(0, ram), gpus=gpus, notes=notes)


@dataclass(frozen=True)
class Load:
    plan: Plan
    evict: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    reason: str  # "memory" or "max_loaded_models"
    holders: tuple[str, ...]
    needed: int


@dataclass(frozen=True)
class Refuse:
    plan: Plan


Decision = Load | Wait | Refuse


def _same(a: Option, b: Option) -> bool:
    return a.candidate.name == b.candidate.name and a.params == b.params


class Resident(Protocol):
    """What ``decide`` reads of a loaded model (a :class:`WorkerHandle` is one)."""

    @property
    def held(self) -> Held: ...
    @property
    def last_used(self) -> float: ...
    @property
    def idle(self) -> bool: ...


def decide(model_id: str, plan_on: Callable[[Machine], Plan], machine: Machine,
           workers: Mapping[str, Resident], max_loaded: int) -> Decision:
    """The placement for ``model_id`` now, given the loaded models (pure: loads and evicts
    nothing)."""
    held = {k: w.held for k, w in workers.items()}
    others = {k: w for k, w in workers.items() if k != model_id}  # a reload replaces itself
    idle = sorted((k for k, w in others.items() if w.idle), key=lambda k: others[k].last_used)
    busy = tuple(sorted(k for k in others if k not in idle))
    target = plan_on(view(machine, held, frozenset([model_id, *idle])))
    if target.choice is None:
        empty = plan_on(view(machine, held, frozenset(workers)))
        if empty.choice is None or not busy:
            return Refuse(empty)
        return Wait("memory", busy, empty.choice.estimate.total)
    if len(busy) + 1 > max_loaded:
        return Wait("max_loaded_models", busy, target.choice.estimate.total)
    room = max_loaded - 1 - len(busy)  # idle models that may stay
    for k in range(max(0, len(idle) - room), len(idle) + 1):
        evict = tuple(idle[:k])
        result = target if k == len(idle) else plan_on(
            view(machine, held, frozenset([model_id, *evict])))
        if result.choice is not None and _same(result.choice, target.choice):
            return Load(result, evict)
    raise AssertionError("unreachable: evicting every idle model gives the target plan")


@dataclass(frozen=True)
class LoadRequest:
    """What the scheduler needs from the service to place one model."""

    config: LoadConfig  # the load the request was planned with (used as is when running)
    plan_on: Callable[[Machine], Plan]  # plans the model on a machine (a view of this one)
    read_machine: Callable[[], Machine]
    config_for: Callable[[Plan], LoadConfig]  # the load for a plan's choice
    refuse: Callable[[Plan], LlamaHomeError]  # the error for a model that fits nowhere
    reuse: Callable[[], LoadConfig | None]  # the running load this request may use, if any
    refusing: Callable[[], LlamaHomeError | None] = lambda: None  # set while shutting down


@dataclass
class Waiter:
    """A request waiting for memory (or a load slot) that busy models hold."""

    model: str
    since: float  # wall clock
    reason: str
    holders: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "since": iso(self.since),
                "waited_s": round(time.time() - self.since, 1), "reason": self.reason,
                "waiting_for": list(self.holders)}


def iso(wall: float | None) -> str | None:
    """Wall-clock seconds as RFC 3339 UTC with milliseconds (what Ollama's expires_at is)."""
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


class Scheduler:
    """The one place that loads and evicts models to make room (see the module docstring)."""

    def __init__(self, pool: WorkerPool, *, max_loaded: Callable[[], int | None],
                 wait_timeout: Callable[[], float]) -> None:
        self.pool = pool
        self._max_loaded = max_loaded
        self._wait_timeout = wait_timeout
        self._lock = asyncio.Lock()
        self._waiters: dict[int, Waiter] = {}
        self._tickets = itertools.count()

    def waiting(self) -> list[Waiter]:
        return sorted(self._waiters.values(), key=lambda w: w.since)

    def state(self, worker: WorkerHandle) -> dict[str, Any]:
        """What the status surfaces show of a loaded model: since and until when it is loaded
        (``expires_at`` null while it runs requests, and when it stays until evicted: a
        negative ``keep_alive_s``), and the memory the scheduler counts it as holding."""
        last_used = time.time() - (time.monotonic() - worker.last_used)
        return {"state": "idle" if worker.idle else "running",
                "loaded_at": iso(worker.loaded_at), "last_used_at": iso(last_used),
                "keep_alive_s": self.pool.keep_alive_of(worker),
                "expires_at": iso(self.pool.expires_at(worker)),
                "memory_held": worker.held.to_dict()}

    def overview(self, machine: Machine) -> dict[str, Any]:
        """The scheduler's own state: its limit, the requests waiting, the models loading."""
        return {"max_loaded_models": self.max_loaded(machine),
                "waiting": [w.to_dict() for w in self.waiting()],
                "loading": [{"model": m, "since": iso(t)} for m, t in sorted(self.pool.loading.items())]}

    def max_loaded(self, machine: Machine) -> int:
        return self._max_loaded() or default_max_loaded(machine)

    async def acquire(self, request: LoadRequest) -> tuple[WorkerHandle, Plan | None]:
        """The worker for a model, loaded (and room made) when needed; with the plan it was
        loaded by (None: it was already running)."""
        worker = self.pool.take(request.config)
        if worker is not None:
            return worker, None
        model = request.config.model_id
        ticket, deadline = next(self._tickets), time.monotonic() + self._wait_timeout()
        try:
            while True:
                async with self._lock:
                    stop = request.refusing()
                    if stop is not None:  # the daemon began shutting down meanwhile
                        raise stop
                    running = request.reuse()  # loaded by another request meanwhile?
                    worker = self.pool.take(running) if running is not None else None
                    if worker is not None:
                        return worker, None
                    decision = await self._decide(model, request)
                    if isinstance(decision, Refuse):
                        raise request.refuse(decision.plan)
                    if isinstance(decision, Load) and await self._evict(decision.evict):
                        worker = await self.pool.acquire(request.config_for(decision.plan))
                        chosen = decision.plan.choice
                        assert chosen is not None
                        worker.held = held_by(chosen.estimate, worker.info.get("buffers"),
                                              decision.plan.machine)
                        return worker, decision.plan
                if isinstance(decision, Wait):
                    self._wait(ticket, model, decision, deadline)
                await asyncio.sleep(POLL_S)
        finally:
            self._waiters.pop(ticket, None)

    async def _decide(self, model_id: str, request: LoadRequest) -> Decision:
        workers = self.pool.workers()

        def run() -> Decision:
            machine = request.read_machine()
            return decide(model_id, request.plan_on, machine, workers, self.max_loaded(machine))

        return await asyncio.to_thread(run)

    async def _evict(self, models: tuple[str, ...]) -> bool:
        """Unload ``models``, least recently used first; False (nothing unloaded) when one of
        them got a request while the decision was made (decide again)."""
        workers = self.pool.workers()
        if any(m not in workers or not workers[m].idle for m in models):
            return False
        for model in models:
            log.info("model_evicted", model=model,
                     idle_s=round(time.monotonic() - workers[model].last_used, 1))
            await self.pool.unload(model, "evicted")
        return True

    def _wait(self, ticket: int, model: str, decision: Wait, deadline: float) -> None:
        waiter = self._waiters.get(ticket)
        if waiter is None:
            log.info("model_load_waiting", model=model, reason=decision.reason,
                     holders=list(decision.holders))
            waiter = self._waiters[ticket] = Waiter(model, time.time(), decision.reason,
                                                    decision.holders)
        waiter.reason, waiter.holders = decision.reason, decision.holders
        if time.monotonic() >= deadline:
            raise self._busy(waiter, decision)

    def _busy(self, waiter: Waiter, decision: Wait) -> ModelTooLarge:
        workers = self.pool.workers()
        holders = [{"model": m, "running": workers[m].in_flight,
                    "queued": workers[m].admission.waiting, **workers[m].held.to_dict()}
                   for m in decision.holders if m in workers]
        names = ", ".join(f"{h['model']!r} ({h['total_bytes'] / GiB:.2f} GiB, {h['running']} "
                          "running)" for h in holders)
        waited = round(time.time() - waiter.since, 1)
        if decision.reason == "max_loaded_models":
            why = (f"{len(holders)} busy model(s) already take every one of the "
                   f"max_loaded_models slots: {names}")
        else:
            why = (f"it needs {decision.needed / GiB:.2f} GiB, which busy models hold: {names}")
        return ModelTooLarge(
            f"model {waiter.model!r} cannot be loaded now: {why}. It waited {waited} s "
            "(system_settings.load_wait_timeout) for them to finish; retry later, or raise "
            "system_settings.max_loaded_models / free memory",
            details={"model": waiter.model, "reason": decision.reason, "held_by": holders,
                     "needed_bytes": decision.needed, "waited_s": waited, "retry_after": 5},
            headers={"Retry-After": "5"})
