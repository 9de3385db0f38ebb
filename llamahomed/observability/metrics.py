"""The daemon's monitoring: one Prometheus registry fed by ``llamahome.monitoring``'s classes.

* :class:`~llamahome.monitoring.AdvancedMetrics`: HTTP requests, vLLM-named inference series,
  refusals, disconnects, model loads/unloads/crashes, request traces.
* :class:`~llamahome.monitoring.PerformanceMonitor`: model load times (``model_load``).
* :class:`~llamahome.monitoring.ResourceMonitor`: CPU and RSS of the daemon and each worker,
  system memory, GPU memory and utilization (read at every scrape).
* :class:`MetricsObserver`: the pool's hooks, turning worker events into those series.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from llamahome.monitoring import (
    AdvancedMetrics,
    ModelState,
    PerformanceMonitor,
    ResourceMonitor,
)
from prometheus_client import CollectorRegistry

from llamahomed.engine.handle import PoolObserver, SequenceStream, WorkerHandle
from llamahomed.engine.protocol import Done, Failed


class MetricsObserver(PoolObserver):
    """Worker and pool events -> metrics."""

    def __init__(self, metrics: AdvancedMetrics, performance: PerformanceMonitor) -> None:
        self.metrics = metrics
        self.performance = performance

    def model_loaded(self, model: str, seconds: float) -> None:
        self.metrics.model_loaded(model, seconds)
        self.performance.record("model_load", seconds)

    def model_load_failed(self, model: str) -> None:
        self.metrics.model_load_failed(model)

    def model_unloaded(self, model: str, reason: str) -> None:
        self.metrics.model_unloaded(model, reason)

    def worker_crashed(self, model: str) -> None:
        self.metrics.worker_crashed(model)

    def first_token(self, model: str, stream: SequenceStream) -> None:
        self.metrics.record_first_token(model, stream.first_token_at - stream.submitted_at)

    def next_token(self, model: str, stream: SequenceStream, gap: float) -> None:
        self.metrics.record_inter_token(model, gap)

    def finished(self, model: str, stream: SequenceStream, event: Done | Failed) -> None:
        usage = event.usage if isinstance(event, Done) else event.details
        self.metrics.record_generation(
            model, prompt_tokens=int(usage.get("prompt_tokens", 0)),
            generation_tokens=int(usage.get("completion_tokens", 0)),
            e2e_seconds=time.perf_counter() - stream.submitted_at,
            queue_seconds=stream.queue_ms(event) / 1000.0,
            finished_reason=event.finish_reason if isinstance(event, Done) else "error")


@dataclass
class Monitoring:
    """Everything ``/metrics`` shows, on one registry."""

    registry: CollectorRegistry
    metrics: AdvancedMetrics
    performance: PerformanceMonitor
    resources: ResourceMonitor
    observer: MetricsObserver

    @classmethod
    def create(cls, *, tracing: bool,
               workers: Callable[[], Mapping[str, WorkerHandle]]) -> Monitoring:
        """``workers()`` gives the loaded models' workers at scrape time."""
        registry = CollectorRegistry()
        metrics = AdvancedMetrics(enable_tracing=tracing, registry=registry)
        performance = PerformanceMonitor(registry=registry)

        def processes() -> dict[str, int]:
            found = {"daemon": os.getpid()}
            for model, worker in workers().items():
                if worker.pid is not None:
                    found[f"worker:{model}"] = worker.pid
            return found

        def models() -> Iterable[ModelState]:
            return [ModelState(model, w.admission.running, w.admission.waiting, w.kv_usage)
                    for model, w in workers().items()]

        metrics.watch_models(models)
        resources = ResourceMonitor(registry=registry, processes=processes)
        return cls(registry, metrics, performance, resources, MetricsObserver(metrics, performance))
