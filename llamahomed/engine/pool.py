"""One worker per loaded model: load on first use, unload after keep-alive, restart after a crash.

Which models may be loaded together (memory, ``max_loaded_models``, eviction, waiting) is the
scheduler's decision (:mod:`llamahomed.service.scheduler`); the pool only runs workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable

import structlog

from llamahomed.core.errors import LlamaHomeError, ModelReloading
from llamahomed.engine.config import LoadConfig
from llamahomed.engine.handle import PoolObserver, WorkerHandle
from llamahomed.engine.spare import REPLACE_DELAY, SpareKeeper

log = structlog.get_logger(__name__)


class WorkerPool:
    """Maps model ids to running workers. ``acquire`` is the only way to get one."""

    def __init__(self, *, start_timeout: float, keep_alive: Callable[[], float],
                 observer: PoolObserver | None = None,
                 drain_timeout: Callable[[], float] = lambda: 60.0,
                 spare: SpareKeeper | None = None) -> None:
        self.spare = spare or SpareKeeper(lambda: False)  # a worker started ahead (spare.py)
        self.observer = observer or PoolObserver()
        self._workers: dict[str, WorkerHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._start_timeout = start_timeout
        self._keep_alive = keep_alive
        self._drain_timeout = drain_timeout
        self._reaper: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Future[None]] = set()
        self.loading: dict[str, float] = {}  # model id -> wall clock when its load began

    def workers(self) -> dict[str, WorkerHandle]:
        return {k: w for k, w in self._workers.items() if w.alive}

    def take(self, config: LoadConfig) -> WorkerHandle | None:
        """The running worker loaded with exactly ``config``, marked used; None otherwise.

        Synchronous on purpose: between this and the caller's submit nothing else runs on the
        event loop, so the scheduler cannot evict the worker in between.
        """
        worker = self._workers.get(config.model_id)
        if worker is None or not worker.alive or worker.config != config:
            return None
        worker.last_used = time.monotonic()
        return worker

    def keep_alive_of(self, worker: WorkerHandle) -> float:
        """Seconds ``worker`` stays loaded once idle (negative: until evicted)."""
        return self._keep_alive() if worker.keep_alive is None else worker.keep_alive

    def expires_at(self, worker: WorkerHandle) -> float | None:
        """Wall-clock time the idle ``worker`` will be unloaded; None while it is busy or when
        it stays loaded until evicted."""
        keep = self.keep_alive_of(worker)
        if keep < 0 or not worker.idle:
            return None
        return time.time() - (time.monotonic() - worker.last_used) + keep

    async def acquire(self, config: LoadConfig) -> WorkerHandle:
        """The running worker for this model, started (or restarted) when needed."""
        lock = self._locks.setdefault(config.model_id, asyncio.Lock())
        async with lock:
            worker = self._workers.get(config.model_id)
            if worker is not None and worker.alive and worker.config == config:
                worker.last_used = time.monotonic()
                return worker
            if worker is not None:
                reason = "reloaded" if worker.alive else "crashed"
                if worker.alive:
                    await self._drain_for_reload(worker)
                await worker.stop()
                self.observer.model_unloaded(config.model_id, reason)
            worker = WorkerHandle(config)
            worker.observer = self.observer
            started = time.perf_counter()
            log.info("model_loading", model=config.model_id, n_ctx=config.n_ctx,
                     n_gpu_layers=config.n_gpu_layers)
            self.loading[config.model_id] = time.time()
            try:
                await worker.start(self._start_timeout, self.spare.take())
            except BaseException:
                await worker.kill()  # a cancelled load leaves no process behind
                self.observer.model_load_failed(config.model_id)
                raise
            finally:
                self.loading.pop(config.model_id, None)
                self.spare.refresh(REPLACE_DELAY)  # the next spare, once this model got going
            seconds = time.perf_counter() - started
            self.observer.model_loaded(config.model_id, seconds)
            log.info("model_loaded", model=config.model_id, pid=worker.pid,
                     seconds=round(seconds, 3), spare=worker.from_spare)
            self._workers[config.model_id] = worker
            self._ensure_reaper()
            return worker

    async def _drain_for_reload(self, worker: WorkerHandle) -> None:
        """Let the running requests finish before the model is reloaded with new settings
        (new requests for it wait on this model's lock meanwhile); past the drain timeout,
        end the rest with a retryable 503."""
        timeout = self._drain_timeout()
        log.info("model_reload_draining", model=worker.config.model_id,
                 in_flight=worker.in_flight, timeout_s=timeout)
        if not await worker.drain(timeout):
            aborted = await worker.abort_all(ModelReloading(
                f"model {worker.config.model_id!r} is being reloaded with new settings; retry "
                "the request", details={"model": worker.config.model_id, "retry_after": 1},
                headers={"Retry-After": "1"}))
            log.warning("model_reload_aborted", model=worker.config.model_id, aborted=aborted)

    async def abort_all(self, error: LlamaHomeError) -> int:
        """End every in-flight sequence of every worker with ``error``; refuse new ones."""
        return sum([await worker.abort_all(error) for worker in list(self._workers.values())])

    def busy(self) -> int:
        """Sequences running or waiting for a slot, over all workers."""
        return sum(w.in_flight + w.admission.waiting for w in self._workers.values() if w.alive)

    async def unload(self, model_id: str, reason: str = "unloaded") -> bool:
        worker = self._workers.pop(model_id, None)
        if worker is None:
            return False
        # Shielded and tracked: a cancelled caller (the reaper at shutdown) must not leave a
        # half-stopped worker behind; close() waits for every stop still running.
        stopping = asyncio.ensure_future(worker.stop())
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        await asyncio.shield(stopping)
        self.observer.model_unloaded(model_id, reason)
        log.info("model_unloaded", model=model_id, reason=reason)
        return True

    async def close(self) -> None:
        await self.spare.close()
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        for model_id in list(self._workers):
            await self.unload(model_id, "shutdown")
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), context=contextvars.Context())

    async def _reap(self) -> None:
        """Unload models idle for longer than their keep-alive (the request's, else the
        setting's; negative: never); forget workers that died."""
        while self._workers:
            shortest = min((k for k in map(self.keep_alive_of, self._workers.values()) if k >= 0),
                           default=4.0)
            await asyncio.sleep(min(1.0, max(0.05, shortest / 4)))
            now = time.monotonic()
            for model_id, worker in list(self._workers.items()):
                idle, keep = now - worker.last_used, self.keep_alive_of(worker)
                if worker.alive and worker.idle and 0 <= keep <= idle:
                    log.info("model_idle_unload", model=model_id, idle_s=round(idle, 1))
                    await self.unload(model_id, "idle")
