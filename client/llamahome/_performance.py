"""``PerformanceMonitor``: timing named operations (re-exported by ``llamahome.monitoring``)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from prometheus_client import CollectorRegistry, Histogram

from ._buckets import LATENCY_BUCKETS


@dataclass(frozen=True)
class OperationStats:
    """Timings of one named operation (percentiles over the last 1024 runs)."""

    count: int
    failures: int
    total_seconds: float
    min_seconds: float
    max_seconds: float
    mean_seconds: float
    p50_seconds: float
    p95_seconds: float


class _Tracking:
    """What ``track_operation`` returns: a context manager for ``with`` and ``async with``."""

    def __init__(self, monitor: PerformanceMonitor, name: str) -> None:
        self._monitor, self.name = monitor, name
        self._started = 0.0
        self.seconds: float | None = None

    def __enter__(self) -> _Tracking:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._started
        self._monitor.record(self.name, self.seconds, ok=exc_type is None)

    async def __aenter__(self) -> _Tracking:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class PerformanceMonitor:
    """Times named operations: ``llamahome_operation_duration_seconds{operation, outcome}``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._histogram = Histogram("llamahome_operation_duration_seconds",
                                    "Duration of named operations.", ["operation", "outcome"],
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self._lock = threading.Lock()
        self._runs: dict[str, collections.deque[float]] = {}
        self._totals: dict[str, list[float]] = {}  # name -> [count, failures, sum, min, max]

    def track_operation(self, name: str) -> _Tracking:
        """Time the block (``with`` or ``async with``); an exception counts as a failure."""
        return _Tracking(self, name)

    def record(self, name: str, seconds: float, ok: bool = True) -> None:
        self._histogram.labels(operation=name, outcome="ok" if ok else "error").observe(seconds)
        with self._lock:
            self._runs.setdefault(name, collections.deque(maxlen=1024)).append(seconds)
            t = self._totals.setdefault(name, [0, 0, 0.0, float("inf"), 0.0])
            t[0] += 1
            t[1] += not ok
            t[2] += seconds
            t[3], t[4] = min(t[3], seconds), max(t[4], seconds)

    def stats(self, name: str) -> OperationStats | None:
        """Timings of ``name``; None before its first run."""
        with self._lock:
            if name not in self._totals:
                return None
            count, failures, total, low, high = self._totals[name]
            runs = sorted(self._runs[name])
        return OperationStats(int(count), int(failures), total, low, high, total / count,
                              _percentile(runs, 0.5), _percentile(runs, 0.95))

    def operations(self) -> list[str]:
        with self._lock:
            return sorted(self._totals)


def _percentile(ordered: Sequence[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
