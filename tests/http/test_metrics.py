"""GET /metrics on the real app with real workers: names, labels, and values that move."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY_MODEL_ID

GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture
def settings(make_settings: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """The tiny-model settings, plus overrides from ``indirect`` parametrisation."""
    return make_settings(**getattr(request, "param", {}))


async def scrape(api: Any, headers: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed by prometheus_client's parser."""
    response = await api.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_need_a_token_and_count_the_refusal(api: Any, auth: dict[str, str]) -> None:
    refused = await api.get("/metrics")
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "authentication_error"
    bad = await api.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    samples = await scrape(api, auth)
    assert value(samples, "llamahome_auth_failures_total") == 2
    assert value(samples, "llamahome_http_requests_total", route="/metrics", status="401") == 2


@pytest.mark.parametrize("settings", [{"metrics_public": True}], indirect=True)
async def test_metrics_public_serves_without_a_token(api: Any) -> None:
    response = await api.get("/metrics")
    assert response.status == 200
    assert "llamahome_http_requests_total" in await response.text()


async def test_values_move_after_real_requests_through_the_tiny_model(
        api: Any, auth: dict[str, str]) -> None:
    before = await scrape(api, auth)
    assert value(before, "vllm:prompt_tokens_total", model_name=TINY_MODEL_ID) == 0
    processed = await (await api.post("/api/v1/process", json={"prompt": "hello world", **GREEDY},
                                      headers=auth)).json()
    stream = await api.post("/api/v1/stream", json={"prompt": "one two three", **GREEDY},
                            headers=auth)
    lines = [json.loads(line) for line in (await stream.text()).splitlines()]
    final = lines[-1]
    assert final["done"] is True
    after = await scrape(api, auth)
    model = {"model_name": TINY_MODEL_ID}
    prompt_tokens = processed["usage"]["prompt_tokens"] + final["usage"]["prompt_tokens"]
    generated = processed["usage"]["completion_tokens"] + final["usage"]["completion_tokens"]
    assert value(after, "vllm:prompt_tokens_total", **model) == prompt_tokens
    assert value(after, "vllm:generation_tokens_total", **model) == generated == 16
    assert value(after, "vllm:e2e_request_latency_seconds_count", **model) == 2
    assert value(after, "vllm:time_to_first_token_seconds_count", **model) == 2
    assert value(after, "vllm:request_queue_time_seconds_count", **model) == 2
    # one gap between each pair of tokens of each request
    assert value(after, "vllm:inter_token_latency_seconds_count", **model) == generated - 2
    assert value(after, "vllm:e2e_request_latency_seconds_sum", **model) > 0
    assert value(after, "vllm:request_success_total", finished_reason="length", **model) == 2
    assert value(after, "vllm:num_requests_running", **model) == 0
    assert value(after, "vllm:num_requests_waiting", **model) == 0
    assert (("vllm:kv_cache_usage_perc", (("model_name", TINY_MODEL_ID),)) in after)
    assert value(after, "llamahome_http_requests_total", route="/api/v1/process", status="200") == 1
    assert value(after, "llamahome_http_requests_total", route="/api/v1/stream", status="200") == 1
    assert value(after, "llamahome_model_loads_total", result="ok", **model) == 1
    assert value(after, "llamahome_operation_duration_seconds_count",
                 operation="model_load", outcome="ok") == 1
    assert value(after, "llamahome_process_resident_memory_bytes", process="daemon") > 10 * 2**20
    assert value(after, "llamahome_process_resident_memory_bytes",
                 process=f"worker:{TINY_MODEL_ID}") > 10 * 2**20
    assert value(after, "llamahome_system_memory_total_bytes") > 0


async def test_a_killed_worker_counts_as_a_crash(api: Any, auth: dict[str, str]) -> None:
    from llamahomed.http.keys import INFERENCE

    await api.post("/api/v1/process", json={"prompt": "hi", **GREEDY}, headers=auth)
    worker = api.server.app[INFERENCE].pool.workers()[TINY_MODEL_ID]
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    for _ in range(100):
        if not worker.alive:
            break
        await asyncio.sleep(0.05)
    samples = await scrape(api, auth)
    assert value(samples, "llamahome_worker_crashes_total", model_name=TINY_MODEL_ID) == 1
    assert (await api.post("/api/v1/process", json={"prompt": "hi", **GREEDY},
                           headers=auth)).status == 200
    samples = await scrape(api, auth)
    assert value(samples, "llamahome_model_loads_total", model_name=TINY_MODEL_ID, result="ok") == 2
    assert value(samples, "llamahome_model_unloads_total", model_name=TINY_MODEL_ID,
                 reason="crashed") == 1


@pytest.mark.parametrize("settings", [{"tracing": True}], indirect=True)
async def test_tracing_puts_phases_in_the_final_line_and_the_log(
        api: Any, auth: dict[str, str]) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await api.post("/api/v1/stream", json={"prompt": "trace me", **GREEDY},
                                  headers={**auth, "x-request-id": "req-trace-1"})
        final = json.loads((await response.text()).splitlines()[-1])
    trace = final["trace"]
    assert trace["request_id"] == "req-trace-1"
    for phase in ("queue_ms", "load_ms", "prefill_ms", "decode_ms", "total_ms"):
        assert trace[phase] >= 0
    assert trace["load_ms"] > 0  # the first request loaded the model
    assert trace["total_ms"] >= trace["decode_ms"]
    summary = [e for e in logs if e["event"] == "request" and e["route"] == "/api/v1/stream"]
    assert len(summary) == 1
    assert summary[0]["phases"] == {k: v for k, v in trace.items() if k.endswith("_ms")}
    assert summary[0]["model"] == TINY_MODEL_ID and summary[0]["completion_tokens"] == 8


async def test_without_tracing_the_final_line_has_no_trace(api: Any, auth: dict[str, str]) -> None:
    body = await (await api.post("/api/v1/process", json={"prompt": "x", **GREEDY},
                                 headers=auth)).json()
    assert "trace" not in body


async def test_the_summary_line_names_no_prompt_and_no_token(
        api: Any, auth: dict[str, str]) -> None:
    secret_prompt = "my bank password is hunter2"
    with structlog.testing.capture_logs() as logs:
        response = await api.post("/api/v1/process", json={"prompt": secret_prompt, **GREEDY},
                                  headers={**auth, "x-request-id": "req-42"})
        completion = (await response.json())["text"]
    text = json.dumps(logs, default=str)
    assert "hunter2" not in text
    assert auth["Authorization"].split()[1] not in text
    assert completion.strip() == "" or completion not in text
    line = next(e for e in logs if e["event"] == "request")
    assert line["status"] == 200 and line["route"] == "/api/v1/process"
    assert line["request_id"] == "req-42" and line["method"] == "POST"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] == 8
    assert len(line["subject"]) == 16 and "admin" not in line["subject"]
    assert line["duration_ms"] > 0


@pytest.mark.parametrize("settings", [{"log_prompts": True}], indirect=True)
async def test_log_prompts_is_the_debug_switch_that_logs_prompts(
        api: Any, auth: dict[str, str]) -> None:
    with structlog.testing.capture_logs() as logs:
        await api.post("/api/v1/process", json={"prompt": "visible prompt", **GREEDY}, headers=auth)
    assert any(e.get("prompt") == "visible prompt" for e in logs)


async def test_status_reports_loaded_models_with_plan_slots_and_memory(
        api: Any, auth: dict[str, str]) -> None:
    assert (await api.get("/api/v1/status")).status == 401
    await api.post("/api/v1/process", json={"prompt": "x", **GREEDY}, headers=auth)
    status = await (await api.get("/api/v1/status", headers=auth)).json()
    assert status["uptime_s"] >= 0 and status["pid"] == os.getpid()
    (model,) = status["models"]
    assert model["id"] == TINY_MODEL_ID
    assert model["plan"]["engine"] == "batched" and model["plan"]["n_slots"] == model["slots"] == 8
    assert model["slots_in_use"] == 0 and model["queued"] == 0
    assert model["rss_bytes"] > 0 and status["memory"]["daemon_rss_bytes"] > 0
    assert status["memory"]["workers_rss_bytes"] == model["rss_bytes"]


@pytest.fixture
def gemma_settings(make_settings: Callable[..., Any], tmp_path: Path, gemma_file: Path) -> Any:
    store = tmp_path / "gemma-store"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    return make_settings(models_dir=store, model_settings={"default_model": "gemma3-270m"})


@pytest.mark.gemma
async def test_running_kv_usage_and_a_client_disconnect_through_gemma(
        aiohttp_client: Callable[..., Any], gemma_settings: Any) -> None:
    from llamahomed.http.app import create_app

    api = await aiohttp_client(create_app(gemma_settings))
    auth = {"Authorization": f"Bearer {gemma_settings.admin_token_file.read_text().strip()}"}
    model = {"model_name": "gemma3-270m"}
    response = await api.post("/api/v1/stream", headers=auth, json={
        "prompt": "Write a long story about a lighthouse.", "max_tokens": 400, "temperature": 0})
    assert json.loads(await response.content.readline())["index"] == 0
    during = await scrape(api, auth)
    assert value(during, "vllm:num_requests_running", **model) == 1
    assert 0 < value(during, "vllm:kv_cache_usage_perc", **model) < 1
    response.close()  # the client goes away mid-stream
    for _ in range(200):
        after = await scrape(api, auth)
        if value(after, "llamahome_client_disconnects_total", route="/api/v1/stream") == 1 \
                and value(after, "vllm:num_requests_running", **model) == 0:
            break
        await asyncio.sleep(0.05)
    assert value(after, "llamahome_client_disconnects_total", route="/api/v1/stream") == 1
    assert value(after, "llamahome_http_requests_total", route="/api/v1/stream", status="499") == 1
    assert value(after, "vllm:num_requests_running", **model) == 0
    assert value(after, "vllm:kv_cache_usage_perc", **model) == 0
    assert value(after, "vllm:request_success_total", finished_reason="cancelled", **model) == 1
    assert value(after, "vllm:generation_tokens_total", **model) < 400
