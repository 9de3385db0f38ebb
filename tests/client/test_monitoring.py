"""llamahome.monitoring as the API guide shows it, and what each class records."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamahome.monitoring import (AdvancedMetrics, MetricsCollector, ModelState,
                                  PerformanceMonitor, ResourceMonitor)


def parsed(render: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(render.decode())
            for s in family.samples}


def test_the_guides_basic_metrics_example_records_a_request() -> None:
    collector = MetricsCollector()
    collector.record_request(endpoint="/api/v1/process", duration=0.123, status=200)
    collector.record_request(endpoint="/api/v1/process", duration=0.5, status=503)
    summary = collector.summary()["/api/v1/process"]
    assert (summary.requests, summary.errors) == (2, 1)
    assert summary.mean_seconds == pytest.approx(0.3115)
    assert summary.max_seconds == 0.5
    samples = parsed(collector.render())
    assert samples[("llamahome_http_requests_total",
                    (("route", "/api/v1/process"), ("status", "200")))] == 1
    assert samples[("llamahome_http_request_duration_seconds_count",
                    (("route", "/api/v1/process"),))] == 2
    with pytest.raises(ValueError):
        collector.record_request(endpoint="/x", duration=-1, status=200)


def test_two_collectors_do_not_share_or_clash() -> None:
    a, b = MetricsCollector(), MetricsCollector()
    a.record_request(endpoint="/a", duration=0.1, status=200)
    assert "/a" not in b.summary()


def test_advanced_metrics_with_tracing_keeps_and_returns_traces() -> None:
    metrics = AdvancedMetrics(enable_tracing=True, detailed_logging=True)
    trace = metrics.trace("req-1")
    with trace.phase("prefill"):
        time.sleep(0.01)
    trace.add("queue", 2.5)
    data = metrics.finish_trace(trace)
    assert data is not None and data["request_id"] == "req-1"
    assert data["prefill_ms"] >= 10 and data["queue_ms"] == 2.5
    assert list(metrics.recent_traces) == [data]
    assert AdvancedMetrics().finish_trace(AdvancedMetrics().trace()) is None


def test_advanced_metrics_exports_vllm_names_with_model_name() -> None:
    metrics = AdvancedMetrics()
    metrics.record_first_token("m", 0.05)
    metrics.record_inter_token("m", 0.02)
    metrics.record_generation("m", prompt_tokens=7, generation_tokens=3, e2e_seconds=0.2,
                              queue_seconds=0.01, finished_reason="stop")
    metrics.watch_models(lambda: [ModelState("m", running=2, waiting=1, kv_cache_usage=0.25)])
    metrics.rate_limited()
    metrics.auth_failed()
    metrics.client_disconnected("/api/v1/stream")
    metrics.model_loaded("m", 1.5)
    metrics.model_unloaded("m", "idle")
    metrics.worker_crashed("m")
    s = parsed(metrics.render())
    m = (("model_name", "m"),)
    assert s[("vllm:prompt_tokens_total", m)] == 7
    assert s[("vllm:generation_tokens_total", m)] == 3
    assert s[("vllm:time_to_first_token_seconds_count", m)] == 1
    assert s[("vllm:inter_token_latency_seconds_count", m)] == 1
    assert s[("vllm:e2e_request_latency_seconds_sum", m)] == pytest.approx(0.2)
    assert s[("vllm:request_queue_time_seconds_count", m)] == 1
    assert s[("vllm:num_requests_running", m)] == 2
    assert s[("vllm:num_requests_waiting", m)] == 1
    assert s[("vllm:kv_cache_usage_perc", m)] == 0.25
    assert s[("llamahome_rate_limited_total", ())] == 1
    assert s[("llamahome_auth_failures_total", ())] == 1
    assert s[("llamahome_client_disconnects_total", (("route", "/api/v1/stream"),))] == 1
    assert s[("llamahome_model_loads_total", (("model_name", "m"), ("result", "ok")))] == 1
    assert s[("llamahome_model_unloads_total", (("model_name", "m"), ("reason", "idle")))] == 1
    assert s[("llamahome_worker_crashes_total", m)] == 1


def test_the_guides_performance_example_runs_with_and_async_with() -> None:
    monitor = PerformanceMonitor()

    async def process_prompt() -> str:
        await asyncio.sleep(0.01)
        return "done"

    async def main() -> str:
        with monitor.track_operation("process_prompt"):
            result = await process_prompt()
        async with monitor.track_operation("process_prompt") as tracked:
            await process_prompt()
        assert tracked.seconds is not None and tracked.seconds >= 0.01
        return result

    assert asyncio.run(main()) == "done"
    with pytest.raises(RuntimeError):
        with monitor.track_operation("process_prompt"):
            raise RuntimeError("boom")
    stats = monitor.stats("process_prompt")
    assert stats is not None
    assert (stats.count, stats.failures) == (3, 1)
    assert stats.min_seconds <= stats.p50_seconds <= stats.p95_seconds <= stats.max_seconds
    assert stats.mean_seconds * 3 == pytest.approx(stats.total_seconds)
    assert monitor.stats("never") is None
    assert monitor.operations() == ["process_prompt"]


def test_resource_monitor_reads_this_process() -> None:
    monitor = ResourceMonitor()
    sample = monitor.sample(["cpu", "memory"])
    cpu, rss = sample.processes["self"]
    assert rss > 1_000_000 and cpu >= 0
    assert sample.memory_total is not None and sample.memory_total > rss
    assert sample.gpus == ()  # not asked for
    with pytest.raises(ValueError, match="unknown resource metric"):
        monitor.sample(["disk"])


def test_the_guides_resource_tracking_example_samples_in_the_background() -> None:
    monitor = ResourceMonitor()
    monitor.track_resources(interval=0.05, metrics=["cpu", "memory", "gpu"])
    try:
        deadline = time.monotonic() + 5
        while len(monitor.history) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        monitor.stop()
    assert len(monitor.history) >= 3
    assert monitor.latest is not None and monitor.latest.processes["self"][1] > 0
    count = len(monitor.history)
    time.sleep(0.15)
    assert len(monitor.history) == count  # stopped means stopped


def test_resource_monitor_exports_gauges_per_process() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    ResourceMonitor(registry=registry, processes=lambda: {"me": os.getpid(), "gone": 2**22 + 7})
    s = parsed(generate_latest(registry))
    assert s[("llamahome_process_resident_memory_bytes", (("process", "me"),))] > 0
    assert ("llamahome_process_resident_memory_bytes", (("process", "gone"),)) not in s
    assert s[("llamahome_system_memory_available_bytes", ())] > 0


def test_the_public_names_are_exported() -> None:
    import llamahome.monitoring as monitoring

    for name in ("MetricsCollector", "AdvancedMetrics", "PerformanceMonitor", "ResourceMonitor"):
        assert name in monitoring.__all__ and getattr(monitoring, name) is not None


class _Memory:
    used, total = 3 * 2**30, 80 * 2**30


class _Utilization:
    gpu = 42


class FakeNvml:
    """NVML's calls as nvidia-ml-py names them (this machine has no NVIDIA driver)."""

    @staticmethod
    def nvmlDeviceGetCount() -> int:
        return 2

    @staticmethod
    def nvmlDeviceGetHandleByIndex(index: int) -> int:
        return index

    @staticmethod
    def nvmlDeviceGetMemoryInfo(handle: int) -> _Memory:
        return _Memory()

    @staticmethod
    def nvmlDeviceGetName(handle: int) -> bytes | str:
        return b"NVIDIA H100" if handle == 0 else "NVIDIA L4"

    @staticmethod
    def nvmlDeviceGetUtilizationRates(handle: int) -> _Utilization:
        return _Utilization()


def test_gpu_readings_become_per_gpu_gauges() -> None:
    """The NVML path, with a stand-in for the driver; on a machine without one it is absent."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    monitor = ResourceMonitor(registry=registry)
    monitor._nvml, monitor._nvml_tried = FakeNvml(), True
    gpus = monitor.sample(["gpu"]).gpus
    assert [(g.index, g.name, g.utilization) for g in gpus] == [(0, "NVIDIA H100", 42.0),
                                                                (1, "NVIDIA L4", 42.0)]
    s = parsed(generate_latest(registry))
    assert s[("llamahome_gpu_memory_used_bytes", (("gpu", "1"), ("name", "NVIDIA L4")))] == 3 * 2**30
    assert s[("llamahome_gpu_memory_total_bytes", (("gpu", "0"), ("name", "NVIDIA H100")))] == 80 * 2**30
    assert s[("llamahome_gpu_utilization_percent", (("gpu", "0"), ("name", "NVIDIA H100")))] == 42
