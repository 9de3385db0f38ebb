"""The memory estimate against real measurements: the H100 table and real llama.cpp loads here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamahomed.planner import LoadParams, ModelShape, estimate, kv_cache_bytes, llama_shape
from llamahomed.planner.measured import parse_buffers
from llamahomed.registry.gguf_meta import read_gguf_info
from tests.conftest import load_script
from tests.fixtures.tiny_gguf import write_tiny_llama

MiB = 2**20

# /work/shared/gpu/README.md: H100, llama-cpp-python 0.3.36 CUDA, Llama-3.2-1B shape,
# n_batch 512, Llama() defaults (flash attention off); VRAM as an NVML delta in MiB.
H100 = [
    ("Q4_K_M", 99, 4096, 1705), ("Q4_K_M", 99, 16384, 2352), ("Q4_K_M", 8, 4096, 792),
    ("Q4_K_M", 0, 4096, 460), ("F16", 99, 4096, 2770), ("F16", 99, 16384, 3946),
    ("F16", 8, 4096, 1694), ("F16", 0, 4096, 808),
]


def test_the_synthetic_1b_files_match_the_readme_sizes() -> None:
    assert llama_shape("1B", "Q4_K_M").weight_bytes / 1e6 == pytest.approx(951, rel=0.01)
    assert llama_shape("1B", "F16").weight_bytes / 1e9 == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize(("quant", "ngl", "n_ctx", "vram_mib"), H100)
def test_the_estimate_reproduces_the_h100_vram_figures_within_ten_percent(
        quant: str, ngl: int, n_ctx: int, vram_mib: int) -> None:
    shape = llama_shape("1B", quant)
    est = estimate(shape, LoadParams(n_ctx=n_ctx, n_gpu_layers=ngl, flash_attn=False),
                   backend="cuda")
    assert est.vram / MiB == pytest.approx(vram_mib, rel=0.10)


def test_gpu_layers_move_weights_and_kv_from_ram_to_vram() -> None:
    shape = llama_shape("8B", "Q4_K_M")
    loads = [estimate(shape, LoadParams(n_ctx=4096, n_gpu_layers=n), backend="cuda")
             for n in (0, 8, 16, 32, 33)]
    rams = [e.cpu.weights + e.cpu.kv_cache for e in loads]
    vrams = [sum(g.weights + g.kv_cache for g in e.gpus) for e in loads]
    assert rams == sorted(rams, reverse=True) and vrams == sorted(vrams)
    assert loads[-1].cpu.weights == shape.embedding_bytes  # only the input embedding stays


def test_sliding_window_layers_keep_only_their_window(gemma_file: Path) -> None:
    shape = ModelShape.from_info(read_gguf_info(gemma_file))
    assert sum(shape.swa_layers) == 15 and shape.sliding_window == 512
    full = kv_cache_bytes(shape, LoadParams(n_ctx=32768, swa_full=True))
    window = kv_cache_bytes(shape, LoadParams(n_ctx=32768, swa_full=False))
    # llama.cpp: 3 global layers x 32768 cells + 15 SWA layers x (512 + 512 ubatch) cells,
    # each cell 1 KV head x (256 + 256) x 2 bytes.
    assert full == 18 * 32768 * 1024
    assert window == (3 * 32768 + 15 * 1024) * 1024


def test_llama_cpp_buffer_lines_are_parsed_per_device() -> None:
    lines = ["load_tensors:   CPU_Mapped model buffer size =   235.16 MiB\n",
             "load_tensors:        CUDA0 model buffer size =  1000.00 MiB\n",
             "llama_kv_cache:        CUDA0 KV buffer size =    12.00 MiB\n",
             "llama_context:  CUDA_Host  output buffer size =     8.00 MiB\n",
             "sched_reserve:      CUDA0 compute buffer size =   514.50 MiB\n",
             "llama_kv_cache: size =   12.00 MiB (  4096 cells,   3 layers,  8/1 seqs)\n",
             "load_tensors:   CPU_REPACK model buffer size =    12.00 MiB\n",
             "load_tensors: Metal_Mapped model buffer size =   100.00 MiB\n"]
    buffers = parse_buffers(lines)
    assert buffers == {"CPU": {"model": int(235.16 * MiB) + 12 * MiB, "output": 8 * MiB},
                       "Metal": {"model": 100 * MiB},
                       "CUDA0": {"model": 1000 * MiB, "KV": 12 * MiB, "compute": int(514.5 * MiB)}}


ACCURACY_TINY = [
    ("tiny 2x64 f32", {"n_ctx": 256}, 256),
    ("tiny 8x512 q8_0 v32k", {"n_embd": 512, "n_layer": 8, "n_head": 8, "n_kv_head": 4,
                              "n_ff": 1536, "n_ctx": 8192, "vocab_size": 32000, "ftype": "q8_0"},
     8192),
]


@pytest.fixture(scope="module")
def accuracy() -> Any:
    return load_script("plan_accuracy")


@pytest.mark.parametrize(("label", "kwargs", "n_ctx"), ACCURACY_TINY, ids=["2x64", "8x512"])
def test_the_estimate_is_within_ten_percent_of_what_llama_cpp_allocates_tiny(
        accuracy: Any, tmp_path: Path, label: str, kwargs: dict[str, Any], n_ctx: int) -> None:
    path = tmp_path / "m.gguf"
    write_tiny_llama(path, **kwargs)
    row = accuracy.row(label, path, n_ctx)
    assert row["measured_mib"] > 0
    assert abs(row["error_pct"]) <= 10, row


@pytest.mark.parametrize(("n_ctx", "swa_full", "engine"), [
    (2048, True, "batched"), (32768, True, "batched"), (32768, False, "batched"),
    (8192, True, "sequential"),
])
def test_the_estimate_is_within_ten_percent_of_what_llama_cpp_allocates_gemma(
        accuracy: Any, gemma_file: Path, n_ctx: int, swa_full: bool, engine: str) -> None:
    row = accuracy.row("gemma", gemma_file, n_ctx, swa_full, engine)
    assert abs(row["error_pct"]) <= 10, row


def test_measurements_persist_and_a_corrupt_file_is_ignored(tmp_path: Path) -> None:
    from llamahomed.planner import Measurements

    path = tmp_path / "state" / "allocations.json"
    store = Measurements(path)
    key = Measurements.key("m.gguf", 123, LoadParams(n_ctx=4096).key())
    assert store.get(key) is None
    store.record(key, {"CPU": {"model": 5 * MiB, "KV": MiB}})
    assert Measurements(path).get(key) == {"CPU": {"model": 5 * MiB, "KV": MiB}}
    path.write_text("{not json")
    assert Measurements(path).get(key) is None
