"""``quantize``: llama.cpp's quantizer on generated models, loaded and run afterwards."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from llamahomed.core.errors import AlreadyExists, InsufficientStorage, InvalidRequest, QuantizeFailed
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.gguf_meta import read_gguf_info
from llamahomed.registry.quantize import (QUANT_TYPES, QuantizeProgress, estimate_size,
                                          parse_type, propose_quantization, quantize_model)
from llamahomed.registry.store import ModelRegistry
from tests.conftest import TINY_MODEL_ID
from tests.fixtures.tiny_gguf import write_tiny_llama


@pytest.fixture(scope="module")
def wide_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256-wide tiny Llama: k-quants need rows that are a multiple of 256."""
    path = tmp_path_factory.mktemp("wide") / "wide-llama.gguf"
    return Path(write_tiny_llama(
        path, n_embd=256, n_ff=512, n_head=4, n_kv_head=2, name="wide-llama"))


def registry(store: Path) -> ModelRegistry:
    return ModelRegistry(store, Catalog.load())


def test_q8_0_variant_is_written_beside_the_source_and_grouped_with_it(models_dir: Path) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    assert entry.quantization == "F32"
    events: list[QuantizeProgress] = []
    path = quantize_model(entry, parse_type("q8_0"), models_dir, threads=1, progress=events.append)
    assert path == models_dir / "tiny-llama-Q8_0.gguf"
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny-llama-Q8_0.gguf", "tiny-llama.gguf"]
    info = read_gguf_info(path)
    assert info.quantization == "Q8_0"
    assert {t.type_name for t in info.tensors if len(t.shape) == 2} == {"Q8_0"}
    assert path.stat().st_size < entry.size / 3
    groups = registry(models_dir).models()
    assert [e.quantization for e in groups[TINY_MODEL_ID]] == ["Q8_0", "F32"]
    assert registry(models_dir).resolve("tiny-llama:q8_0").path == path
    last = events[-1]
    assert last.done == last.total == len(info.tensors)
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_k_quant_of_a_256_wide_model_loads_and_generates(wide_model_file: Path,
                                                         tmp_path: Path) -> None:
    import llama_cpp

    store = tmp_path / "store"
    store.mkdir()
    os.link(wide_model_file, store / wide_model_file.name)
    entry = registry(store).resolve("wide-llama")
    path = quantize_model(entry, parse_type("Q4_K_M"), store, threads=2)
    info = read_gguf_info(path)
    assert info.quantization == "Q4_K_M"
    kinds = {t.type_name for t in info.tensors if len(t.shape) == 2}
    assert "Q4_K" in kinds and kinds <= {"Q4_K", "Q6_K", "Q5_K", "Q8_0"}
    # the estimate the planner gets is close to what llama.cpp wrote
    assert abs(estimate_size(entry.info, QUANT_TYPES["Q4_K_M"]) - info.file_size) < 0.1 * info.file_size
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False)
    try:
        out = llm.create_completion("hello world", max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] == 8
        assert out["choices"][0]["text"]
    finally:
        llm.close()


async def test_quantized_variant_serves_through_the_daemon(models_dir: Path, aiohttp_client: Any,
                                                           make_settings: Any) -> None:
    from llamahomed.http.app import create_app

    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    quantize_model(entry, parse_type("Q4_0"), models_dir, threads=1)
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    detail = await (await client.get("/api/v1/models/tiny-llama:q4_0", headers=auth)).json()
    assert detail["quantization"] == "Q4_0" and detail["file"] == "tiny-llama-Q4_0.gguf"
    response = await client.post("/api/v1/process", headers=auth, json={
        "prompt": "the cat", "model": "tiny-llama:q4_0", "max_tokens": 5, "temperature": 0})
    body = await response.json()
    assert response.status == 200, body
    assert body["usage"]["completion_tokens"] == 5


def test_refuses_to_overwrite_and_to_repeat(models_dir: Path) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    target = models_dir / "tiny-llama-Q8_0.gguf"
    target.write_bytes(b"precious")
    with pytest.raises(AlreadyExists, match="already exists"):
        quantize_model(entry, parse_type("Q8_0"), models_dir)
    assert target.read_bytes() == b"precious"
    with pytest.raises(AlreadyExists, match="already F32"):
        quantize_model(entry, parse_type("F32"), models_dir)


def test_unknown_type_lists_the_choices() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_type("Q9_X")
    assert "Q4_K_M" in caught.value.message and "Q4_K_M" in caught.value.details["choices"]
    assert parse_type(" q4_k_m ").ftype == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M


def test_ftype_values_match_llama_cpp() -> None:
    import llama_cpp

    for name, qtype in QUANT_TYPES.items():
        constant = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
        assert getattr(llama_cpp, constant) == qtype.ftype, name


def test_requantizing_needs_the_flag(models_dir: Path) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    q8 = quantize_model(entry, parse_type("Q8_0"), models_dir, threads=1)
    q8_entry = registry(models_dir).resolve(q8.stem)
    with pytest.raises(InvalidRequest, match="--allow-requantize"):
        quantize_model(q8_entry, parse_type("Q4_0"), models_dir)
    q4 = quantize_model(q8_entry, parse_type("Q4_0"), models_dir, threads=1, allow_requantize=True)
    assert read_gguf_info(q4).quantization == "Q4_0"


def test_llama_cpp_failure_is_reported_with_its_log(models_dir: Path, tmp_path: Path) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    data = bytearray(entry.path.read_bytes())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tiny-llama.gguf").write_bytes(data[: len(data) // 2])  # tensor data cut off
    bad = registry(broken).models()
    assert bad == {}  # the registry itself refuses a truncated file ...
    from dataclasses import replace

    fake = replace(entry, path=broken / "tiny-llama.gguf")  # ... so hand llama.cpp one directly
    with pytest.raises(QuantizeFailed) as caught:
        quantize_model(fake, parse_type("Q8_0"), broken, threads=1)
    assert caught.value.details["exit_code"] != 0
    assert caught.value.details["log"]
    assert sorted(p.name for p in broken.iterdir()) == ["tiny-llama.gguf"]  # no partial left


def test_not_enough_disk_space(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(InsufficientStorage):
        quantize_model(entry, parse_type("Q8_0"), models_dir)
    assert not (models_dir / "tiny-llama-Q8_0.gguf").exists()


def test_propose_quantization(models_dir: Path) -> None:
    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    q8 = estimate_size(entry.info, QUANT_TYPES["Q8_0"])
    q6 = estimate_size(entry.info, QUANT_TYPES["Q6_K"])
    assert propose_quantization(entry, entry.size) is None  # fits already
    assert propose_quantization(entry, entry.size - 1) == "Q8_0"
    assert propose_quantization(entry, q8) == "Q8_0"
    assert propose_quantization(entry, q8 - 1) == "Q6_K"
    assert q6 < q8
    assert propose_quantization(entry, 1000) is None  # nothing is that small
    q8_path = quantize_model(entry, parse_type("Q8_0"), models_dir, threads=1)
    q8_entry = registry(models_dir).resolve(q8_path.stem)
    assert propose_quantization(q8_entry, q8_entry.size - 1) is None  # no unasked requantizing


def test_auto_quantize_setting_defaults_off() -> None:
    from llamahomed.core.settings import Settings, SystemSettings

    assert SystemSettings().auto_quantize is False
    assert Settings(system_settings={"auto_quantize": True}).system_settings.auto_quantize is True


def test_interrupt_kills_the_child_and_leaves_nothing(models_dir: Path) -> None:
    import psutil

    entry = registry(models_dir).resolve(TINY_MODEL_ID)
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    def interrupt(state: QuantizeProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_model(entry, parse_type("Q8_0"), models_dir, threads=1, progress=interrupt)
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny-llama.gguf"]
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [p for p in left if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
