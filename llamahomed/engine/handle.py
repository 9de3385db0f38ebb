"""The daemon's side of one worker process: start it, submit sequences, read their events."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from llamahomed.core.errors import (
    LlamaHomeError,
    ModelLoadFailed,
    WorkerCrashed,
    error_for_code,
)
from llamahomed.engine.admission import Admission
from llamahomed.engine.config import LoadConfig
from llamahomed.engine.spare import Spawned, spawn_worker
from llamahomed.engine.protocol import (
    HEADER,
    MAX_FRAME,
    Done,
    Failed,
    Prompt,
    ProtocolError,
    SamplingParams,
    SeqEvent,
    Text,
    Tokens,
    decode_body,
    encode,
    parse_event,
)

log = structlog.get_logger(__name__)
_ERROR_LINE = re.compile(r"\b(error|failed|abort(ed)?|out of memory)\b", re.IGNORECASE)


@dataclass
class SequenceStream:
    """Events of one sequence, read by the request handler."""

    seq_id: int
    worker: WorkerHandle
    queue: asyncio.Queue[SeqEvent] = field(default_factory=asyncio.Queue)
    finished: bool = False
    request_id: str = ""
    submitted_at: float = 0.0   # perf_counter when it asked for a slot
    admitted_at: float = 0.0    # ... when it got one
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    counted: bool = True  # a generation or an embedding (metrics); a tokenize is not

    async def next_event(self) -> SeqEvent:
        event = await self.queue.get()
        if isinstance(event, (Done, Failed, Tokens)):
            self.finished = True
        return event

    async def events(self) -> AsyncIterator[SeqEvent]:
        while not self.finished:
            yield await self.next_event()

    def queue_ms(self, done: Done | Failed | None = None) -> float:
        """Time spent waiting: for a daemon-side slot, then in the worker before prefill."""
        worker_ms = float(done.timings.get("queue_ms", 0.0)) if isinstance(done, Done) else 0.0
        return max(0.0, self.admitted_at - self.submitted_at) * 1000.0 + worker_ms

    async def cancel(self) -> None:
        """Stop this sequence at the worker's next step (no-op once it finished)."""
        if not self.finished:
            self.finished = True
            await self.worker.cancel(self.seq_id)


@dataclass(frozen=True)
class Held:
    """Memory a loaded model holds, in bytes: RAM and each GPU's share (what the scheduler
    counts as taken while it is loaded, and as freed when it is evicted)."""

    ram: int = 0
    vram: tuple[int, ...] = ()
    measured: bool = False  # from llama.cpp's buffers at this load, not the plan's estimate

    def to_dict(self) -> dict[str, Any]:
        return {"ram_bytes": self.ram, "vram_bytes": list(self.vram),
                "total_bytes": self.ram + sum(self.vram), "measured": self.measured}


class PoolObserver:
    """Hooks for metrics: the pool and its workers call these; the default does nothing."""

    def model_loaded(self, model: str, seconds: float) -> None: ...
    def model_load_failed(self, model: str) -> None: ...
    def model_unloaded(self, model: str, reason: str) -> None: ...
    def worker_crashed(self, model: str) -> None: ...
    def first_token(self, model: str, stream: SequenceStream) -> None: ...
    def next_token(self, model: str, stream: SequenceStream, gap: float) -> None: ...
    def finished(self, model: str, stream: SequenceStream, event: Done | Failed) -> None: ...


class WorkerHandle:
    """One worker process and its in-flight sequences."""

    _seq_ids = itertools.count(1)

    def __init__(self, config: LoadConfig, *, max_queue: int = 64, queue_timeout: float = 60.0) -> None:
        self.config = config
        self.admission = Admission(config.n_slots, max_queue, queue_timeout)
        self.info: dict[str, Any] = {}
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._streams: dict[int, SequenceStream] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=30)
        self.alive = False
        self.last_used = time.monotonic()
        self.loaded_at = time.time()  # wall clock, set again when the model is ready
        # Seconds this model stays loaded once idle, as the last request asked: None = the
        # keep_alive setting, negative = until evicted or the daemon stops, 0 = unload when idle.
        self.keep_alive: float | None = None
        self.held = Held()  # what the scheduler counts this model as holding
        self.exit_reason: str | None = None
        self.tokens_generated = 0
        self.observer = PoolObserver()
        self.kv_usage = 0.0  # share of the KV cache held by running sequences (batched engine)
        self.refusing: LlamaHomeError | None = None  # set when shutting down: no new sequences
        self.from_spare = False  # loaded by a spare worker started ahead (spare.py)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def idle(self) -> bool:
        """No sequence running or waiting for a slot."""
        return not self._streams and self.admission.waiting == 0

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every running and queued sequence to end;
        whether they did."""
        deadline = time.monotonic() + timeout
        while self.alive and not self.idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, timeout: float, spare: Spawned | None = None) -> None:
        """Send the load config to ``spare`` (a worker started ahead, see ``spare.py``), or to
        a worker started now, and wait until its model is loaded (or fails to). A spare that
        died before it took the config is replaced by a fresh worker."""
        if spare is not None:
            await spare.detach()
            if await self._hand_config(spare, timeout):
                self.from_spare = True
                return await self._await_ready(timeout)
            log.warning("spare_worker_unusable", model=self.config.model_id, pid=spare.pid)
            await spare.kill()
        if not await self._hand_config(await spawn_worker(), timeout):
            raise ModelLoadFailed(f"model {self.config.model_id!r} did not load: "
                                  f"{self._why(None)}", details={"model": self.config.model_id})
        await self._await_ready(timeout)

    async def _hand_config(self, spawned: Spawned, timeout: float) -> bool:
        """Adopt ``spawned`` and send it the load config; whether it acknowledged."""
        self.process, self._reader, self._writer = spawned.process, spawned.reader, spawned.writer
        self._stderr_tail.clear()
        # The worker's own tasks start in an empty context: they outlive the request that
        # loaded the model, and their log lines must not carry its request id.
        self._tasks.append(asyncio.create_task(self._drain_stderr(), context=contextvars.Context()))
        try:
            self._writer.write(encode({"op": "load", "config": self.config.to_wire()}))
            await self._writer.drain()
            ack = await asyncio.wait_for(self._read_frame(), timeout)
        except (asyncio.TimeoutError, ProtocolError, asyncio.IncompleteReadError, OSError):
            ack = {}
        if ack.get("ev") == "loading":
            return True
        await self.kill()
        self.exit_reason = None
        self._tasks.clear()
        return False

    async def _await_ready(self, timeout: float) -> None:
        try:
            first = await asyncio.wait_for(self._read_frame(), timeout)
        except (asyncio.TimeoutError, ProtocolError, asyncio.IncompleteReadError, OSError) as exc:
            await self.kill()
            raise ModelLoadFailed(f"model {self.config.model_id!r} did not load: "
                                  f"{self._why(exc)}", details={"model": self.config.model_id}) from exc
        if first.get("ev") != "ready":
            await self.kill()
            message = first.get("message") or self._why(None)
            raise ModelLoadFailed(f"model {self.config.model_id!r} failed to load: {message}",
                                  details={"model": self.config.model_id})
        self.info = first.get("info", {})
        self.alive = True
        self.loaded_at = time.time()
        self._tasks.append(asyncio.create_task(self._read_loop(), context=contextvars.Context()))

    def _why(self, exc: BaseException | None) -> str:
        tail = " | ".join(line for line in self._stderr_tail if line.strip())[-500:]
        if isinstance(exc, asyncio.TimeoutError):
            return "timed out"
        return tail or "the worker exited"

    async def _read_frame(self) -> dict[str, Any]:
        assert self._reader is not None
        header = await self._reader.readexactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError("frame too large")
        return decode_body(await self._reader.readexactly(length))

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            level = "warning" if _ERROR_LINE.search(line) else "debug"
            log.log(getattr(logging, level.upper()), "worker_stderr",
                    model=self.config.model_id, line=line)

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self._read_frame()
                if frame.get("ev") == "step":
                    if "kv_usage" in frame:
                        self.kv_usage = float(frame["kv_usage"])
                    for event in frame.get("events", []):
                        self._dispatch(parse_event(event))
        except (asyncio.IncompleteReadError, ProtocolError, OSError, ConnectionError):
            pass
        await self._on_exit()

    def _dispatch(self, event: SeqEvent) -> None:
        stream = self._streams.get(event.seq)
        if isinstance(event, Text):
            self.tokens_generated += event.tokens  # a step that raced a cancel still counts
            if stream is not None and event.tokens:
                self._token_seen(stream)
        if stream is None:
            return
        if not stream.counted:
            if isinstance(event, (Done, Failed, Tokens)):
                self._streams.pop(stream.seq_id, None)
        elif isinstance(event, (Done, Failed)):
            self._finish(stream)
            self.observer.finished(self.config.model_id, stream, event)
        stream.queue.put_nowait(event)

    def _token_seen(self, stream: SequenceStream) -> None:
        now = time.perf_counter()
        if not stream.first_token_at:
            stream.first_token_at = now
            self.observer.first_token(self.config.model_id, stream)
        else:
            self.observer.next_token(self.config.model_id, stream, now - stream.last_token_at)
        stream.last_token_at = now

    def _finish(self, stream: SequenceStream) -> None:
        self._streams.pop(stream.seq_id, None)
        self.admission.leave(stream.seq_id)
        self.last_used = time.monotonic()

    def _fail_stream(self, stream: SequenceStream, error: LlamaHomeError) -> None:
        """End ``stream`` from the daemon's side (the worker died, or shutdown aborts it)."""
        event = Failed(stream.seq_id, error.code, error.message, dict(error.details),
                       stream.request_id)
        self._finish(stream)
        self.observer.finished(self.config.model_id, stream, event)
        stream.queue.put_nowait(event)

    async def _on_exit(self) -> None:
        """The worker is gone: fail everything still in flight with a clear error."""
        self.alive = False
        code = await self.process.wait() if self.process else None
        if self.exit_reason is None:
            self.exit_reason = f"exit code {code}"
            log.error("worker_died", model=self.config.model_id, pid=self.pid, returncode=code,
                      in_flight=len(self._streams))
            self.observer.worker_crashed(self.config.model_id)
        hosts = await self._rpc_hosts_down() if self._streams else {}
        cause = "".join(f"; RPC host {ep} is not answering ({why})" for ep, why in hosts.items())
        for stream in list(self._streams.values()):
            details: dict[str, Any] = {"model": self.config.model_id}
            if hosts:
                details["rpc_hosts_down"] = sorted(hosts)
            self._fail_stream(stream, WorkerCrashed(
                f"the worker for model {self.config.model_id!r} stopped ({self.exit_reason}) "
                f"while this request was running{cause}; retry it"
                + (" (the next load plans without that host)" if hosts else ""), details=details))

    async def _rpc_hosts_down(self) -> dict[str, str]:
        """The RPC servers this model was split across that no longer answer."""
        if not self.config.rpc_servers:
            return {}
        from llamahomed.engine.rpc import unreachable

        return await asyncio.to_thread(unreachable, self.config.rpc_servers, 1.0)

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.alive or self._writer is None:
            raise WorkerCrashed(f"the worker for model {self.config.model_id!r} is not running")
        try:
            self._writer.write(encode(message))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise WorkerCrashed(f"the worker for model {self.config.model_id!r} stopped") from exc

    async def submit(self, prompt: Prompt, params: SamplingParams, *, special: bool = False,
                     request_id: str = "", owner: str = "") -> SequenceStream:
        """Wait for a slot (bounded queue), then hand the sequence to the worker.

        ``request_id`` travels with the sequence into the worker and back on its last event;
        ``special``: the prompt may spell special tokens (a rendered chat template);
        ``owner``: who asks (the token's user), for the fair share of slots and queue.
        """
        streams = await self.submit_many(prompt, params, 1, special=special,
                                         request_id=request_id, owner=owner)
        return streams[0]

    async def submit_many(self, prompt: Prompt, params: SamplingParams, n: int, *,
                          special: bool = False, request_id: str = "",
                          owner: str = "") -> list[SequenceStream]:
        """``submit`` for ``n`` sibling sequences of one prompt (``n`` choices), one stream
        each: one submit op carries their ids, the worker shares the prompt's KV between them,
        and admission counts them as ``n`` sequences (see ``admission.py``)."""
        seq_ids = [next(self._seq_ids) for _ in range(max(1, n))]
        self.last_used = time.monotonic()
        submitted = time.perf_counter()
        if self.refusing is not None:
            raise self.refusing
        await self.admission.enter(seq_ids[0], owner, siblings=seq_ids[1:])
        if self.refusing is not None:
            for seq_id in seq_ids:
                self.admission.leave(seq_id)
            raise self.refusing
        admitted = time.perf_counter()
        streams = [SequenceStream(seq_id, self, request_id=request_id, submitted_at=submitted,
                                  admitted_at=admitted) for seq_id in seq_ids]
        for stream in streams:
            self._streams[stream.seq_id] = stream
        try:
            message: dict[str, Any] = {"op": "submit", "seq": seq_ids[0],
                                       "params": params.to_wire(), "request_id": request_id}
            message["prompt" if isinstance(prompt, str) else "tokens"] = prompt
            if seq_ids[1:]:
                message["siblings"] = seq_ids[1:]
            if special:
                message["special"] = True
            await self._send(message)
        except LlamaHomeError:
            for seq_id in seq_ids:
                self._streams.pop(seq_id, None)
                self.admission.leave(seq_id)
            raise
        return streams

    async def embed(self, inputs: list[str | list[int]]) -> SequenceStream:
        """Embed ``inputs``, texts or token-id lists (no slot needed: the worker embeds on a
        context of its own)."""
        seq_id = next(self._seq_ids)
        self.last_used = time.monotonic()
        stream = SequenceStream(seq_id, self)
        self._streams[seq_id] = stream
        try:
            await self._send({"op": "embed", "seq": seq_id, "inputs": inputs})
        except LlamaHomeError:
            self._streams.pop(seq_id, None)
            raise
        return stream

    async def vocab(self, message: dict[str, Any]) -> Tokens:
        """A ``tokenize`` or ``detokenize`` op (see protocol.py) answered by the worker, which
        owns the model: its ``Tokens``, or the error it answered, raised."""
        seq_id = next(self._seq_ids)
        self.last_used = time.monotonic()
        stream = SequenceStream(seq_id, self, counted=False)
        self._streams[seq_id] = stream
        try:
            await self._send({**message, "seq": seq_id})
        except LlamaHomeError:
            self._streams.pop(seq_id, None)
            raise
        try:
            event = await stream.next_event()
        finally:
            self._streams.pop(seq_id, None)
        if isinstance(event, Failed):
            raise error_for_code(event.code, event.message, event.details)
        if not isinstance(event, Tokens):
            raise LlamaHomeError(f"the worker answered {message['op']} with {event!r}")
        return event

    async def cancel(self, seq_id: int) -> None:
        if seq_id in self._streams:
            try:
                await self._send({"op": "cancel", "seq": seq_id})
            except WorkerCrashed:
                pass

    async def abort_all(self, error: LlamaHomeError) -> int:
        """Refuse new sequences and end every in-flight one with ``error`` (shutdown after the
        drain timeout): each stream gets an error event, the worker a cancel. Returns how many."""
        self.refusing = error
        aborted = list(self._streams.values())
        for stream in aborted:
            self._fail_stream(stream, error)
            try:
                await self._send({"op": "cancel", "seq": stream.seq_id})
            except WorkerCrashed:
                pass
        return len(aborted)

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        self.exit_reason = self.exit_reason or "unloaded"
        if self.alive:
            try:
                await self._send({"op": "shutdown"})
            except WorkerCrashed:
                pass
        if self.process and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
        await self._close()

    async def kill(self) -> None:
        self.exit_reason = self.exit_reason or "killed"
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self._close()

    async def _close(self) -> None:
        self.alive = False
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        for task in self._tasks:
            if task is not asyncio.current_task():
                try:
                    await asyncio.wait_for(task, 2)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    task.cancel()
