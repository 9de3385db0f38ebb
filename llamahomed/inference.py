"""From a validated request to a running sequence: resolve the model, get its worker, submit."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from llamahome.monitoring import AdvancedMetrics, Trace

from llamahomed import tracing
from llamahomed.config_store import ConfigStore, atomic_write
from llamahomed.engine.handle import LoadConfig, SequenceStream, sequence_error
from llamahomed.engine.pool import WorkerPool
from llamahomed.engine.protocol import SamplingParams
from llamahomed.errors import LlamaHomeError
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
    trace: Trace = field(default_factory=Trace)


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
                 performance: Performance, metrics: AdvancedMetrics | None = None) -> None:
        self.config = config
        self.registry = registry
        self.pool = pool
        self.performance = performance
        self.metrics = metrics or AdvancedMetrics()
        self.refusing: LlamaHomeError | None = None  # set while shutting down

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
        if self.refusing is not None:
            raise self.refusing
        context = tracing.current()
        trace = self.metrics.trace(context.request_id if context else None)
        entry = self.resolve(model)
        with trace.phase("load"):
            worker = await self.pool.acquire(self.load_config(entry))
        if self.refusing is not None:  # shutdown began while the model was loading
            raise self.refusing
        system = self.config.settings.system_settings
        worker.admission.max_queue, worker.admission.timeout = system.max_queue, system.queue_timeout
        stream = await worker.submit(prompt, params, request_id=context.request_id if context else "")
        if self.config.settings.log_prompts:
            log.info("prompt", model=entry.id, seq=stream.seq_id, prompt=prompt)
        first = await stream.next_event()
        if first["kind"] == "error":
            raise sequence_error(first)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Generation(entry, stream, int(first.get("prompt_tokens", 0)), created, trace)

    def finished(self, generation: Generation, done: dict[str, Any]) -> None:
        """A sequence's ``done`` event: record its speed, finish its trace (added to ``done``
        as ``trace`` when tracing is on) and add it to the request's log line."""
        self.performance.record(generation.entry, done)
        stream, timings = generation.stream, done.get("timings") or {}
        generation.trace.add("queue", (stream.admitted_at - stream.submitted_at) * 1000
                             + float(timings.get("queue_ms", 0.0)))
        generation.trace.add("prefill", float(timings.get("prefill_ms", 0.0)))
        generation.trace.add("decode", float(timings.get("decode_ms", 0.0)))
        data = self.metrics.finish_trace(generation.trace)
        if data is not None:
            done["trace"] = data
        context = tracing.current()
        if context is not None:
            context.add_sequence(generation.entry.id, done.get("usage") or {}, data)
