"""The planner through the real daemon: variants in the models endpoint, loads that follow the
plan, allocations recorded after a real load and used by the next plan, and a refusal."""

from __future__ import annotations

import json
from collections.abc import Callable, Awaitable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL_ID
from tests.fixtures.tiny_gguf import write_tiny_llama

GREEDY = {"temperature": 0, "max_tokens": 4}


def add_f16_variant(models_dir: Path) -> Path:
    """The tiny model again, F16, under a file name that does not say so: the header groups it."""
    path = models_dir / "tiny-llama-half-copy.gguf"
    write_tiny_llama(path, n_ctx=256, ftype="f16")
    return path


async def test_models_list_the_variants_and_the_one_the_plan_picks(
        api: Any, auth: dict[str, str], models_dir: Path) -> None:
    add_f16_variant(models_dir)
    listing = await (await api.get("/api/v1/models", headers=auth)).json()
    (model,) = [m for m in listing["models"] if m["id"] == TINY_MODEL_ID]
    assert model["selected_variant"] == f"{TINY_MODEL_ID}:f32"  # best quality that fits here
    detail = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    variants = {v["quantization"]: v for v in detail["variants"]}
    assert set(variants) == {"F32", "F16"}
    assert variants["F32"]["selected"] is True and variants["F16"]["selected"] is False
    assert variants["F32"]["bits_per_weight"] > variants["F16"]["bits_per_weight"]
    assert all(v["fits"] and v["memory_required_bytes"] > v["size"] for v in variants.values())
    plan = detail["plan"]
    assert plan["placement"] == "cpu" and plan["n_ctx"] == 256  # the tiny model's trained context
    assert detail["memory"]["total_bytes"] == variants["F32"]["memory_required_bytes"]
    assert detail["performance"]["memory_required"] == detail["memory_required"]
    assert plan["reasons"]


async def test_a_load_follows_the_plan_and_its_allocation_is_used_next_time(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    before = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    assert before["plan"]["memory"]["measured"] is False
    response = await api.post("/api/v1/process", json={"prompt": "the cat", **GREEDY}, headers=auth)
    assert response.status == 200, await response.text()
    after = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    runtime, plan = after["runtime"], after["plan"]
    assert runtime["n_ctx"] == plan["n_ctx"] and runtime["n_threads"] == plan["n_threads"]
    assert runtime["buffers"]["CPU"]["model"] > 0
    recorded = json.loads((settings.state_dir / "allocations.json").read_text())
    (key,) = recorded
    assert key.startswith("tiny-llama.gguf|") and f"ctx={plan['n_ctx']}," in key
    assert recorded[key]["buffers"] == runtime["buffers"]
    assert plan["memory"]["measured"] is True
    real = sum(sum(part.values()) for part in runtime["buffers"].values())
    assert plan["memory"]["cpu"]["weights_bytes"] == real
    assert any("earlier load" in reason for reason in plan["reasons"])


async def test_a_model_that_fits_nowhere_is_refused_with_what_it_needs(
        aiohttp_client: Callable[..., Awaitable[Any]], make_settings: Callable[..., Any]) -> None:
    from llamahomed.http.app import create_app

    settings = make_settings(system_settings={"ram_reserve": "100TB"})
    api = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    response = await api.post("/api/v1/process", json={"prompt": "hi", **GREEDY}, headers=auth)
    body = await response.json()
    assert response.status == 507 and body["error"]["code"] == "model_too_large"
    assert "no variant fits" in body["error"]["message"]
    assert body["error"]["details"]["needed_bytes"] > 0
    detail = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    assert detail["plan"]["fits"] is False and detail["memory_required"] is None
    assert api.app  # the daemon is still up
    health = await api.get("/health")
    assert health.status == 200


async def test_explicit_settings_reach_the_worker(
        aiohttp_client: Callable[..., Awaitable[Any]], make_settings: Callable[..., Any],
        models_dir: Path) -> None:
    from llamahomed.http.app import create_app

    # head size 32 (128 / 4 heads), so a q8_0 KV cache is possible
    write_tiny_llama(models_dir / "tiny-wide.gguf", n_embd=128,
                     n_ff=256, n_ctx=512, name="tiny-wide")
    settings = make_settings(system_settings={"n_ctx": 300, "n_threads": 1, "kv_cache_type": "q8_0"})
    api = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    body = {"prompt": "hi", "model": "tiny-wide", **GREEDY}
    response = await api.post("/api/v1/process", json=body, headers=auth)
    assert response.status == 200, await response.text()
    detail = await (await api.get("/api/v1/models/tiny-wide", headers=auth)).json()
    plan, runtime = detail["plan"], detail["runtime"]
    assert plan["n_ctx"] == 300 and runtime["n_ctx"] == 512  # llama.cpp pads to 256
    assert plan["kv_type"] == "q8_0" and runtime["n_threads"] == 1
    reasons = " ".join(plan["reasons"])
    assert "KV cache q8_0: set in the settings" in reasons and "n_ctx 300" in reasons
    # q8_0 is 34 bytes per 32 values, F16 64: cells x layers x (K+V) x kv heads x head size
    f16 = 512 * 2 * 2 * 2 * 32 * 2
    # (llama.cpp logs sizes in MiB with two decimals, hence the tolerance)
    assert runtime["buffers"]["CPU"]["KV"] == pytest.approx(f16 * 34 / 64, abs=0.005 * 2**20)

    # The 16-wide tiny model cannot hold a q8_0 cache: F16, and the plan says why.
    tiny = await (await api.get(f"/api/v1/models/{TINY_MODEL_ID}", headers=auth)).json()
    assert tiny["plan"]["kv_type"] == "f16"
    assert any("not q8_0 as set" in r for r in tiny["plan"]["reasons"])


@pytest.fixture
def wide_models_dir(tmp_path: Any) -> Any:
    """A store with one F32 model, 256 wide (so that Q8_0 and k-quants apply)."""
    models = tmp_path / "wide-models"
    models.mkdir()
    write_tiny_llama(
        models / "wide.gguf", n_embd=256, n_layer=4, n_head=4, n_kv_head=2, n_ff=512, name="wide")
    return models


@pytest.mark.parametrize("auto", [False, True])
async def test_a_too_large_model_gets_a_quantization_proposed_or_made(
        aiohttp_client: Callable[..., Awaitable[Any]], make_settings: Callable[..., Any],
        wide_models_dir: Any, auto: bool) -> None:
    """42 MiB of RAM: the F32 file does not fit with its buffers, a Q8_0 variant would."""
    from llamahomed.http.keys import INFERENCE
    from llamahomed.http.app import create_app
    from llamahomed.core.resources import simulated_machine

    settings = make_settings(models_dir=wide_models_dir, model_settings={"default_model": "wide"},
                             system_settings={"ram_reserve": "0", "n_ctx": 256,
                                              "auto_quantize": auto})
    api = await aiohttp_client(create_app(settings))
    api.app[INFERENCE].read_machine = lambda: simulated_machine(ram=42 << 20)
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    response = await api.post("/api/v1/process", json={"prompt": "hi", **GREEDY}, headers=auth)
    body = await response.json()
    if not auto:
        assert response.status == 507, body
        assert body["error"]["details"]["proposed_quantization"] == "Q8_0"
        assert "llamahomed quantize wide Q8_0" in body["error"]["message"]
        assert not (wide_models_dir / "wide-Q8_0.gguf").exists()
        return
    assert response.status == 200, body
    assert (wide_models_dir / "wide-Q8_0.gguf").exists()
    assert body["model"] == "wide" and body["usage"]["completion_tokens"] == GREEDY["max_tokens"]
    detail = await (await api.get("/api/v1/models/wide", headers=auth)).json()
    assert detail["quantization"] == "Q8_0" and detail["loaded"] is True
