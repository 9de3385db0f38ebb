"""``ResourceMonitor``: CPU, memory and GPU readings (re-exported by ``llamahome.monitoring``)."""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger("llamahome.monitoring")


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: float  # percent


@dataclass(frozen=True)
class ResourceSample:
    """One reading. ``processes`` maps a process's name to (cpu percent, RSS bytes)."""

    timestamp: float
    cpu_percent: float | None = None
    memory_total: int | None = None
    memory_available: int | None = None
    processes: dict[str, tuple[float, int]] = field(default_factory=dict)
    gpus: tuple[GpuSample, ...] = ()


RESOURCE_KINDS = ("cpu", "memory", "gpu")


class ResourceMonitor:
    """CPU, memory and GPU readings, on demand (:meth:`sample`), in the background
    (:meth:`track_resources`) and at every Prometheus scrape when given a ``registry``.

    ``processes`` names the processes to watch (default: this one as ``"self"``); the daemon
    passes itself and its model workers.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 processes: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._processes = processes or (lambda: {"self": os.getpid()})
        self._handles: dict[int, psutil.Process] = {}
        self._nvml: Any = None
        self._nvml_tried = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.history: collections.deque[ResourceSample] = collections.deque(maxlen=1440)
        psutil.cpu_percent(None)  # starts the system-wide CPU clock
        if registry is not None:
            registry.register(self)

    @property
    def latest(self) -> ResourceSample | None:
        return self.history[-1] if self.history else None

    def sample(self, metrics: Iterable[str] = RESOURCE_KINDS) -> ResourceSample:
        """Read now. CPU percentages cover the time since the previous reading."""
        kinds = set(metrics)
        unknown = kinds - set(RESOURCE_KINDS)
        if unknown:
            raise ValueError(f"unknown resource metric(s): {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(RESOURCE_KINDS)}")
        with self._lock:
            memory = psutil.virtual_memory() if "memory" in kinds else None
            return ResourceSample(
                timestamp=time.time(),
                cpu_percent=psutil.cpu_percent(None) if "cpu" in kinds else None,
                memory_total=memory.total if memory else None,
                memory_available=memory.available if memory else None,
                processes=self._read_processes(kinds) if kinds & {"cpu", "memory"} else {},
                gpus=self._read_gpus() if "gpu" in kinds else ())

    def _read_processes(self, kinds: set[str]) -> dict[str, tuple[float, int]]:
        readings: dict[str, tuple[float, int]] = {}
        wanted = dict(self._processes())
        for pid in set(self._handles) - set(wanted.values()):
            del self._handles[pid]
        for name, pid in wanted.items():
            try:
                handle = self._handles.get(pid)
                if handle is None:
                    handle = self._handles[pid] = psutil.Process(pid)
                    handle.cpu_percent(None)
                cpu = handle.cpu_percent(None) if "cpu" in kinds else 0.0
                rss = handle.memory_info().rss if "memory" in kinds else 0
                readings[name] = (cpu, int(rss))
            except psutil.Error:
                self._handles.pop(pid, None)
        return readings

    def _read_gpus(self) -> tuple[GpuSample, ...]:
        nvml = self._nvml_module()
        if nvml is None:
            return ()
        gpus = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = nvml.nvmlDeviceGetName(handle)
                gpus.append(GpuSample(index, name.decode() if isinstance(name, bytes) else str(name),
                                      int(memory.used), int(memory.total),
                                      float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)))
        except Exception:  # noqa: BLE001 - a driver hiccup must not break a scrape
            log.debug("nvml reading failed", exc_info=True)
        return tuple(gpus)

    def _nvml_module(self) -> Any:
        if not self._nvml_tried:
            self._nvml_tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:  # noqa: BLE001 - no NVML library, no driver or no GPU: no readings
                self._nvml = None
        return self._nvml

    def track_resources(self, interval: float = 60.0,
                        metrics: Iterable[str] = RESOURCE_KINDS) -> ResourceMonitor:
        """Sample every ``interval`` seconds in a background thread into ``history`` (the
        newest is ``latest``) until :meth:`stop`. Returns the monitor (also a context manager)."""
        kinds = tuple(metrics)
        self.sample(kinds)  # validates the names and primes the CPU clocks
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.stop()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.history.append(self.sample(kinds))
                self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, name="llamahome-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End background tracking (no-op when none runs)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ResourceMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def collect(self) -> Iterator[Metric]:
        """The prometheus_client collector protocol: a fresh reading per scrape."""
        reading = self.sample()
        cpu = GaugeMetricFamily("llamahome_process_cpu_percent",
                                "CPU use since the previous reading (100 = one core).",
                                labels=["process"])
        rss = GaugeMetricFamily("llamahome_process_resident_memory_bytes", "Resident memory.",
                                labels=["process"])
        for name, (cpu_percent, rss_bytes) in reading.processes.items():
            cpu.add_metric([name], cpu_percent)
            rss.add_metric([name], rss_bytes)
        yield from (cpu, rss)
        yield GaugeMetricFamily("llamahome_system_cpu_percent", "System-wide CPU use.",
                                value=reading.cpu_percent or 0.0)
        yield GaugeMetricFamily("llamahome_system_memory_total_bytes", "Physical memory.",
                                value=reading.memory_total or 0)
        yield GaugeMetricFamily("llamahome_system_memory_available_bytes", "Memory available.",
                                value=reading.memory_available or 0)
        used = GaugeMetricFamily("llamahome_gpu_memory_used_bytes", "GPU memory in use.",
                                 labels=["gpu", "name"])
        total = GaugeMetricFamily("llamahome_gpu_memory_total_bytes", "GPU memory.",
                                  labels=["gpu", "name"])
        util = GaugeMetricFamily("llamahome_gpu_utilization_percent", "GPU busy share.",
                                 labels=["gpu", "name"])
        for gpu in reading.gpus:
            labels = [str(gpu.index), gpu.name]
            used.add_metric(labels, gpu.memory_used)
            total.add_metric(labels, gpu.memory_total)
            util.add_metric(labels, gpu.utilization)
        yield from (used, total, util)
