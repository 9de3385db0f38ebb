"""Worker processes started ahead of their load: every worker starts as a spare.

A spare is ``python -m llamahomed.engine.worker --fd N`` without a config: it imports llama.cpp,
initialises its backend and waits on its socket (see ``engine/worker/serve.py``). A load sends
it its config and pays only for the model itself. :class:`SpareKeeper` keeps one such process
ready (``system_settings.spare_worker``): started with the pool, taken by the next load, and
replaced in the background after each take when the machine has the RAM for it.

A spare holds no model and is not a loaded model (not in the pool, ``max_loaded_models``,
``/api/ps``); it dies with the daemon (its socket closes and it exits; ``close()`` kills it at
shutdown); a spare that dies is forgotten and replaced (at most ``MAX_FAILURES`` times in a
row), and a load that finds its spare dead starts a fresh worker (``WorkerHandle.start``).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# RAM a waiting spare takes (llama.cpp and numpy imported: about 80 MiB resident on Linux,
# counted with room to spare) on top of the planner's ``ram_reserve``.
SPARE_RAM = 256 * 2**20
MAX_FAILURES = 3  # spares in a row that died before being taken: stop replacing them
# Seconds a replacement waits after a take: its imports would otherwise compete for the CPU
# with the first prefill of the model that was just loaded.
REPLACE_DELAY = 2.0


@dataclass(eq=False)
class Spawned:
    """A worker process and the daemon's end of its socket, no model loaded yet."""

    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    started_at: float = field(default_factory=time.time)  # wall clock
    watcher: asyncio.Task[None] | None = None  # reads its stderr while it waits (SpareKeeper)
    adopted: bool = False  # handed to a SpareKeeper, which owns it from then on

    async def detach(self) -> None:
        """Stop the keeper's watcher: the caller reads the process's stderr from now on."""
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        self.watcher = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def kill(self) -> None:
        if self.watcher is not None and self.watcher is not asyncio.current_task():
            await self.detach()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def spawn_worker() -> Spawned:
    """Start a worker process that waits for its load config."""
    parent, child = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llamahomed.engine.worker", "--fd", str(child.fileno()),
            pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    return Spawned(process, reader, writer)


def ram_allows(reserve: Callable[[], int]) -> Callable[[], bool]:
    """Whether a spare fits now: the available RAM stays above ``reserve()`` with it."""
    def check() -> bool:
        import psutil

        return int(psutil.virtual_memory().available) >= reserve() + SPARE_RAM

    return check


class SpareKeeper:
    """At most one spare worker, kept ready while ``enabled()`` and the RAM allows."""

    def __init__(self, enabled: Callable[[], bool],
                 ram_free: Callable[[], bool] | None = None) -> None:
        self._enabled = enabled
        self._ram_free = ram_free or (lambda: True)
        self._spare: Spawned | None = None
        self._starting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._closed = False
        self._closing = asyncio.Event()
        self.taken = 0  # spares handed to loads (tests, logs)

    @property
    def pid(self) -> int | None:
        """The waiting spare's pid (None: none now)."""
        return self._spare.pid if self._spare is not None and self._spare.alive else None

    def refresh(self, delay: float = 0.0) -> None:
        """Start a spare in the background (after ``delay`` seconds) when one is due; stop it
        when the setting is off (at start, after a take, after a config reload)."""
        if self._closed:
            return
        if not self._enabled():
            if self._spare is not None:
                spare, self._spare = self._spare, None
                self._track(spare.kill())
                log.info("spare_worker_stopped", pid=spare.pid, reason="disabled")
            return
        if self._spare is None and (self._starting is None or self._starting.done()) \
                and self._failures < MAX_FAILURES:
            self._starting = self._track(self._start(delay))

    def adopt(self, spare: Spawned) -> None:
        """Keep ``spare`` (started before the pool existed, ``llamahomed start``) as the spare;
        killed at once when the setting is off or one is already waiting."""
        spare.adopted = True
        if self._closed or not self._enabled() or self._spare is not None or not spare.alive:
            self._track(spare.kill())
            return
        self._keep(spare)

    def take(self) -> Spawned | None:
        """The waiting spare, now the caller's (None: none ready); a new one is started."""
        spare, self._spare = self._spare, None
        if spare is not None and not spare.alive:
            spare = None
        if spare is not None and not self._enabled():
            self._track(spare.kill())
            spare = None
        if spare is not None:
            self.taken += 1
            self._failures = 0
        return spare

    async def close(self) -> None:
        """Kill the spare (shutdown); a start still running ends first."""
        self._closed = True
        self._closing.set()
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        spare, self._spare = self._spare, None
        if spare is not None:
            await spare.kill()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _track(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # Its own context: the spare outlives the request whose load started it.
        task = asyncio.create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, delay: float = 0.0) -> None:
        if delay > 0:
            try:  # ends early when the keeper closes
                await asyncio.wait_for(self._closing.wait(), delay)
            except asyncio.TimeoutError:
                pass
        if self._closed or not self._enabled() or self._spare is not None:
            return
        if not self._ram_free():
            log.info("spare_worker_skipped", reason="not enough free RAM")
            return
        try:
            spare = await spawn_worker()
        except OSError as exc:
            self._failures += 1
            log.warning("spare_worker_failed", error=str(exc))
            return
        if self._closed or not self._enabled():
            await spare.kill()
            return
        self._keep(spare)

    def _keep(self, spare: Spawned) -> None:
        self._spare = spare
        log.info("spare_worker_started", pid=spare.pid)
        spare.watcher = asyncio.create_task(self._watch(spare), context=contextvars.Context())

    async def _watch(self, spare: Spawned) -> None:
        """Log the spare's stderr while it waits; forget (and replace) it if it dies. A take
        cancels this (``Spawned.detach``) before the worker's handle reads the stderr."""
        assert spare.process.stderr is not None
        async for raw in spare.process.stderr:
            log.debug("spare_worker_stderr", pid=spare.pid,
                      line=raw.decode("utf-8", "replace").rstrip())
        await spare.process.wait()
        if self._spare is spare:  # it died while waiting (not taken, not stopped)
            self._spare = None
            self._failures += 1
            log.warning("spare_worker_died", pid=spare.pid, returncode=spare.process.returncode)
            await spare.kill()
            self.refresh()
