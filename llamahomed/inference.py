"""From a validated request to a running sequence: resolve the model, get its worker, submit."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import structlog

from llamahomed.config_store import ConfigStore, atomic_write
from llamahomed.engine.handle import LoadConfig, SequenceStream, WorkerHandle, sequence_error
from llamahomed.engine.pool import WorkerPool
from llamahomed.engine.protocol import SamplingParams
from llamahomed.planner import default_threads, effective_context
from llamahomed.registry.store import ModelEntry, ModelRegistry

log = structlog.get_logger(__name__)


@dataclass
class Generation:
    """A submitted sequence whose prompt the worker accepted."""

    entry: ModelEntry
    stream: SequenceStream
    prompt_tokens: int
    created: str


class Performance:
    """Decode speed measured from real runs, per model file; persisted in the state dir."""

    def __init__(self, path: Any) -> None:
        self._path = path
        self._speeds: dict[str, float] = {}
        try:
            self._speeds = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            self._speeds = {}

    def tokens_per_second(self, entry: ModelEntry) -> float | None:
        return self._speeds.get(entry.path.name)

    def record(self, entry: ModelEntry, done: dict[str, Any]) -> None:
        generated = done.get("usage", {}).get("completion_tokens", 0)
        decode_ms = done.get("timings", {}).get("decode_ms", 0.0)
        if generated < 4 or decode_ms <= 0:
            return  # too short to say anything about speed
        speed = (generated - 1) / (decode_ms / 1000.0)
        old = self._speeds.get(entry.path.name)
        self._speeds[entry.path.name] = round(speed if old is None else 0.7 * old + 0.3 * speed, 2)

    def save(self) -> None:
        try:
            atomic_write(self._path, json.dumps(self._speeds, indent=1).encode(), mode=0o644)
        except OSError as exc:
            log.warning("performance_save_failed", error=str(exc))


class InferenceService:
    """What the handlers call. Holds no request state of its own."""

    def __init__(self, config: ConfigStore, registry: ModelRegistry, pool: WorkerPool,
                 performance: Performance) -> None:
        self.config = config
        self.registry = registry
        self.pool = pool
        self.performance = performance

    def load_config(self, entry: ModelEntry, n_ctx: int | None = None) -> LoadConfig:
        """How ``entry`` is loaded; ``n_ctx`` overrides the configured context for one request."""
        settings = self.config.settings
        system = settings.system_settings
        return LoadConfig(
            model_id=entry.id, model_path=str(entry.path),
            n_ctx=effective_context(entry.info, n_ctx or system.n_ctx), n_batch=settings.n_batch,
            n_threads=system.n_threads or default_threads(),
            n_gpu_layers=-1 if system.n_gpu_layers is None else system.n_gpu_layers,
            n_slots=system.n_slots if system.engine == "batched" else 1, engine=system.engine)

    def resolve(self, model: str | None) -> ModelEntry:
        return self.registry.resolve(model or self.config.settings.model_settings.default_model)

    async def worker_for(self, entry: ModelEntry, n_ctx: int | None = None) -> WorkerHandle:
        """The model's worker, loaded on demand.

        A running worker whose load differs from the wanted one only by a larger context is
        kept, so a request that asked for a bigger context (``n_ctx``) does not make the next
        ones reload the model.
        """
        wanted = self.load_config(entry, n_ctx)
        running = self.pool.workers().get(entry.id)
        if (running is not None and running.config.n_ctx >= wanted.n_ctx
                and dataclasses.replace(running.config, n_ctx=wanted.n_ctx) == wanted):
            wanted = running.config
        return await self.pool.acquire(wanted)

    async def start(self, model: str | None, prompt: str, params: SamplingParams, *,
                    n_ctx: int | None = None) -> Generation:
        """Submit a prompt; returns once the worker accepted it (or raises its error)."""
        entry = self.resolve(model)
        return await self.submit(entry, await self.worker_for(entry, n_ctx), prompt, params)

    async def submit(self, entry: ModelEntry, worker: WorkerHandle, prompt: str,
                     params: SamplingParams, *, special: bool = False) -> Generation:
        """Submit to a worker from ``worker_for``; returns once the prompt is accepted.

        ``special=True`` lets the prompt's text spell special tokens (a rendered chat template's
        ``<|im_start|>``); user prompts never do.
        """
        system = self.config.settings.system_settings
        worker.admission.max_queue, worker.admission.timeout = system.max_queue, system.queue_timeout
        stream = await worker.submit(prompt, params, special=special)
        try:
            first = await stream.next_event()
        except BaseException:  # cancelled while the worker checks the prompt: drop the sequence
            await stream.cancel()
            raise
        if first["kind"] == "error":
            raise sequence_error(first)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Generation(entry, stream, int(first.get("prompt_tokens", 0)), created)

    def finished(self, generation: Generation, done: dict[str, Any]) -> None:
        self.performance.record(generation.entry, done)
