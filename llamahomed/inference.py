"""From a validated request to a running sequence: resolve the model, get its worker, submit."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import structlog

from llamahomed.config_store import ConfigStore, atomic_write
from llamahomed.engine.handle import LoadConfig, SequenceStream, sequence_error
from llamahomed.engine.pool import WorkerPool
from llamahomed.engine.protocol import SamplingParams
from llamahomed.planner import default_threads, effective_context
from llamahomed.registry.catalog import Catalog
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

    @classmethod
    def create(cls, config: ConfigStore) -> InferenceService:
        """The registry, worker pool and measurements for ``config`` (the daemon's and
        ``llamahome.server.LlamaServer``'s one way to build them); ``close()`` when done."""
        settings = config.settings
        pool = WorkerPool(start_timeout=settings.worker_start_timeout,
                          keep_alive=lambda: config.settings.system_settings.keep_alive)
        return cls(config, ModelRegistry(settings.models_path, Catalog.load()), pool,
                   Performance(settings.measurements_file))

    async def close(self) -> None:
        """Stop every worker and save the speed measurements."""
        await self.pool.close()
        self.performance.save()

    def load_config(self, entry: ModelEntry) -> LoadConfig:
        settings = self.config.settings
        system = settings.system_settings
        return LoadConfig(
            model_id=entry.id, model_path=str(entry.path),
            n_ctx=effective_context(entry.info, system.n_ctx), n_batch=settings.n_batch,
            n_threads=system.n_threads or default_threads(),
            n_gpu_layers=-1 if system.n_gpu_layers is None else system.n_gpu_layers,
            n_slots=system.n_slots if system.engine == "batched" else 1, engine=system.engine)

    def resolve(self, model: str | None) -> ModelEntry:
        return self.registry.resolve(model or self.config.settings.model_settings.default_model)

    async def start(self, model: str | None, prompt: str, params: SamplingParams) -> Generation:
        """Submit a prompt; returns once the worker accepted it (or raises its error)."""
        entry = self.resolve(model)
        worker = await self.pool.acquire(self.load_config(entry))
        system = self.config.settings.system_settings
        worker.admission.max_queue, worker.admission.timeout = system.max_queue, system.queue_timeout
        stream = await worker.submit(prompt, params)
        first = await stream.next_event()
        if first["kind"] == "error":
            raise sequence_error(first)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Generation(entry, stream, int(first.get("prompt_tokens", 0)), created)

    def finished(self, generation: Generation, done: dict[str, Any]) -> None:
        self.performance.record(generation.entry, done)
