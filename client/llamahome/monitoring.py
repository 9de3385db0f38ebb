"""Metrics, tracing and resource monitoring: the API guide's ``llamahome.monitoring``.

The daemon exports its ``/metrics`` through these same classes, so a program that embeds
LlamaHome (or wraps the client) gets the same series under the same names.

* :class:`MetricsCollector` counts requests by endpoint and status and times them.
* :class:`AdvancedMetrics` adds inference series under vLLM's names (label ``model_name``),
  counters for refusals, disconnects and model life-cycle events, and request traces.
* :class:`PerformanceMonitor` times named operations (``with`` or ``async with``).
* :class:`ResourceMonitor` reads CPU, RSS and system memory (psutil) and per-GPU memory and
  utilization (NVML, when ``nvidia-ml-py`` and an NVIDIA driver are present).

Every class writes into a ``prometheus_client.CollectorRegistry``: its own unless you pass one,
so several instances never clash. ``render()`` gives the Prometheus text format.
Dependencies: ``prometheus-client`` and ``psutil``, the client's ``toolkit`` extra
(``pip install 'llamahome[toolkit]'``; the daemon installs it); ``nvidia-ml-py`` for GPU
readings is the ``gpu`` extra. The rest of the client needs neither.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

try:
    import prometheus_client  # noqa: F401  (used here and by ._performance, ._resources)
    import psutil  # noqa: F401  (used by ._resources)
except ImportError as exc:
    raise ImportError(
        f"llamahome.monitoring needs prometheus-client and psutil ({exc.name} is missing): "
        "pip install 'llamahome[toolkit]'",
        name=exc.name,
    ) from exc

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ._buckets import LATENCY_BUCKETS, TOKEN_BUCKETS
from ._performance import OperationStats, PerformanceMonitor
from ._resources import GpuSample, ResourceMonitor, ResourceSample

__all__ = [
    "AdvancedMetrics", "EndpointSummary", "GpuSample", "MetricsCollector", "ModelState",
    "OperationStats", "PerformanceMonitor", "ResourceMonitor", "ResourceSample", "Trace",
]

log = logging.getLogger("llamahome.monitoring")


@dataclass(frozen=True)
class EndpointSummary:
    """What :meth:`MetricsCollector.summary` says about one endpoint."""

    requests: int
    errors: int
    mean_seconds: float
    max_seconds: float


class MetricsCollector:
    """HTTP requests by endpoint (route) and status: ``llamahome_http_requests_total`` and
    ``llamahome_http_request_duration_seconds``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter("llamahome_http_requests", "HTTP requests by route and status.",
                                 ["route", "status"], registry=self.registry)
        self._durations = Histogram("llamahome_http_request_duration_seconds",
                                    "Time from request to the end of its response, by route.",
                                    ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {}  # endpoint -> [requests, errors, sum, max]

    def record_request(self, endpoint: str, duration: float, status: int) -> None:
        """Count one finished request; ``status`` >= 400 counts as an error."""
        if duration < 0:
            raise ValueError("duration cannot be negative")
        self._requests.labels(route=endpoint, status=str(int(status))).inc()
        self._durations.labels(route=endpoint).observe(duration)
        with self._lock:
            totals = self._totals.setdefault(endpoint, [0, 0, 0.0, 0.0])
            totals[0] += 1
            totals[1] += int(status) >= 400
            totals[2] += duration
            totals[3] = max(totals[3], duration)

    def summary(self) -> dict[str, EndpointSummary]:
        """Requests, errors, mean and max duration per endpoint since this collector began."""
        with self._lock:
            return {endpoint: EndpointSummary(int(n), int(errors), total / n if n else 0.0, peak)
                    for endpoint, (n, errors, total, peak) in self._totals.items()}

    def render(self) -> bytes:
        """Everything in this collector's registry, in the Prometheus text format."""
        return generate_latest(self.registry)


@dataclass(frozen=True)
class ModelState:
    """A loaded model's live numbers, read when metrics are scraped."""

    model_name: str
    running: int
    waiting: int
    kv_cache_usage: float  # 0..1


class _Phase:
    def __init__(self, trace: Trace, name: str) -> None:
        self._trace, self._name = trace, name
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._trace.add(self._name, (time.perf_counter() - self._started) * 1000)


@dataclass
class Trace:
    """One request's phases in milliseconds (queue, load, prefill, decode, ...)."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    phases: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, phase: str, milliseconds: float) -> None:
        """Add ``milliseconds`` to ``phase`` (phases seen twice accumulate)."""
        self.phases[phase] = round(self.phases.get(phase, 0.0) + milliseconds, 2)

    def phase(self, name: str) -> _Phase:
        """``with trace.phase("prefill"):`` times the block into that phase."""
        return _Phase(self, name)

    def as_dict(self) -> dict[str, Any]:
        """``{"request_id", "<phase>_ms"..., "total_ms"}``."""
        phases = {f"{name}_ms": value for name, value in self.phases.items()}
        return {"request_id": self.request_id, **phases,
                "total_ms": round((time.perf_counter() - self.started) * 1000, 2)}


class AdvancedMetrics(MetricsCollector):
    """Request metrics plus inference series under vLLM's names and request tracing.

    ``enable_tracing``: :meth:`finish_trace` keeps the last traces (``recent_traces``) and
    observes ``llamahome_request_phase_seconds``; off, traces are dropped.
    ``detailed_logging``: model events and finished traces are logged (stdlib logger
    ``llamahome.monitoring``). Prompts and completions are never logged here.
    """

    def __init__(self, enable_tracing: bool = False, detailed_logging: bool = False,
                 registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.enable_tracing = enable_tracing
        self.detailed_logging = detailed_logging
        self.recent_traces: collections.deque[dict[str, Any]] = collections.deque(maxlen=256)
        r, m = self.registry, ["model_name"]
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed.", m, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", m, registry=r)
        self.request_success = Counter("vllm:request_success", "Finished requests by reason.",
                                       [*m, "finished_reason"], registry=r)
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds", "From submission to the first generated token.",
            m, buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token_latency = Histogram(
            "vllm:inter_token_latency_seconds", "Between two generated tokens of one request.",
            m, buckets=TOKEN_BUCKETS, registry=r)
        self.e2e_request_latency = Histogram(
            "vllm:e2e_request_latency_seconds", "From submission to the last token.",
            m, buckets=LATENCY_BUCKETS, registry=r)
        self.request_queue_time = Histogram(
            "vllm:request_queue_time_seconds", "Waiting for a free slot.",
            m, buckets=LATENCY_BUCKETS, registry=r)
        self._rate_limited = Counter("llamahome_rate_limited", "Requests refused by the rate limiter.",
                                     registry=r)
        self._auth_failed = Counter("llamahome_auth_failures", "Requests refused for a missing "
                                    "or invalid token.", registry=r)
        self._disconnects = Counter("llamahome_client_disconnects", "Clients that went away "
                                    "before their response ended.", ["route"], registry=r)
        self._loads = Counter("llamahome_model_loads", "Model loads by result.",
                              [*m, "result"], registry=r)
        self._load_seconds = Histogram("llamahome_model_load_seconds", "Time to load a model.",
                                       m, buckets=LATENCY_BUCKETS, registry=r)
        self._unloads = Counter("llamahome_model_unloads", "Model unloads by reason.",
                                [*m, "reason"], registry=r)
        self._crashes = Counter("llamahome_worker_crashes", "Model workers that died.", m,
                                registry=r)
        self._phases = Histogram("llamahome_request_phase_seconds", "Traced request phases.",
                                 ["phase"], buckets=LATENCY_BUCKETS, registry=r)

    # -- counters others call ---------------------------------------------------------------
    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def auth_failed(self) -> None:
        self._auth_failed.inc()

    def client_disconnected(self, route: str) -> None:
        self._disconnects.labels(route=route).inc()

    def model_loaded(self, model: str, seconds: float) -> None:
        self._loads.labels(model_name=model, result="ok").inc()
        self._load_seconds.labels(model_name=model).observe(seconds)
        self._event("model_loaded", model=model, seconds=round(seconds, 3))

    def model_load_failed(self, model: str) -> None:
        self._loads.labels(model_name=model, result="failed").inc()
        self._event("model_load_failed", model=model)

    def model_unloaded(self, model: str, reason: str = "unloaded") -> None:
        self._unloads.labels(model_name=model, reason=reason).inc()
        self._event("model_unloaded", model=model, reason=reason)

    def worker_crashed(self, model: str) -> None:
        self._crashes.labels(model_name=model).inc()
        self._event("worker_crashed", model=model)

    # -- per-token and per-request inference series ------------------------------------------
    def record_first_token(self, model: str, seconds: float) -> None:
        self.time_to_first_token.labels(model_name=model).observe(seconds)

    def record_inter_token(self, model: str, seconds: float) -> None:
        self.inter_token_latency.labels(model_name=model).observe(seconds)

    def record_generation(self, model: str, *, prompt_tokens: int, generation_tokens: int,
                          e2e_seconds: float, queue_seconds: float,
                          finished_reason: str = "length") -> None:
        """One finished sequence: token counters, end-to-end and queue time, its reason."""
        labels = {"model_name": model}
        self.prompt_tokens.labels(**labels).inc(prompt_tokens)
        self.generation_tokens.labels(**labels).inc(generation_tokens)
        self.e2e_request_latency.labels(**labels).observe(e2e_seconds)
        self.request_queue_time.labels(**labels).observe(queue_seconds)
        self.request_success.labels(finished_reason=finished_reason, **labels).inc()

    def watch_models(self, source: Callable[[], Iterable[ModelState]]) -> None:
        """Export ``vllm:num_requests_running``, ``..._waiting`` and ``vllm:kv_cache_usage_perc``
        from ``source()``, called at every scrape (so unloaded models disappear)."""
        self.registry.register(_ModelStateCollector(source))

    # -- traces ------------------------------------------------------------------------------
    def trace(self, request_id: str | None = None) -> Trace:
        return Trace(request_id) if request_id else Trace()

    def finish_trace(self, trace: Trace) -> dict[str, Any] | None:
        """The trace as a dict when tracing is on (also kept and observed); else None."""
        if not self.enable_tracing:
            return None
        for phase, ms in trace.phases.items():
            self._phases.labels(phase=phase).observe(ms / 1000.0)
        data = trace.as_dict()
        self.recent_traces.append(data)
        self._event("trace", **data)
        return data

    def _event(self, event: str, **fields: Any) -> None:
        if self.detailed_logging:
            log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()),
                     extra={"monitoring": {"event": event, **fields}})


class _ModelStateCollector:
    def __init__(self, source: Callable[[], Iterable[ModelState]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("vllm:num_requests_running", "Sequences decoding now.",
                                    labels=["model_name"])
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting for a slot.",
                                    labels=["model_name"])
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc",
                               "Share of the KV cache held by running sequences (1 = full).",
                               labels=["model_name"])
        for state in self._source():
            running.add_metric([state.model_name], state.running)
            waiting.add_metric([state.model_name], state.waiting)
            kv.add_metric([state.model_name], state.kv_cache_usage)
        yield from (running, waiting, kv)
