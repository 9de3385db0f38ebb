#!/usr/bin/env python3
"""Estimate vs what llama.cpp really allocates, for every model that loads on this machine.

For each case a fresh process loads the model the way the daemon's batched worker does
(``n_slots`` 8, unified KV, full-size SWA cache, n_ubatch 512, flash attention auto, CPU; a few
rows also through the sequential engine's ``Llama``, flash attention off), and
sums the buffers llama.cpp reports (model, KV, output, compute). The planner's estimate of those
buffers comes from the GGUF header alone. RSS growth over the load is shown for information.

    python scripts/plan_accuracy.py [--models-dir DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamahomed.planner.estimate import LoadParams, estimate  # noqa: E402
from llamahomed.planner.shape import ModelShape  # noqa: E402
from llamahomed.registry.gguf_meta import read_gguf_info  # noqa: E402

MiB = 2**20
N_SLOTS = 8

_CHILD = r"""
import json, sys, psutil
from llamahomed.planner.measured import capture_buffers, parse_buffers
from llamahomed.engine.worker.batched import BatchedEngine
from llamahomed.engine.worker.sequential import SequentialEngine
engine = BatchedEngine if sys.argv[5] == "batched" else SequentialEngine
proc = psutil.Process(); before = proc.memory_info().rss
cfg = dict(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=512, n_threads=2,
           n_gpu_layers=0, n_slots=int(sys.argv[3]), swa_full=sys.argv[4] == "1")
with capture_buffers() as lines:
    loaded = engine.load(cfg, lambda events: None)
print(json.dumps({"buffers": parse_buffers(lines), "rss": proc.memory_info().rss - before}))
"""

# (label, write_tiny_llama arguments, contexts)
TINY_SIZES = [
    ("tiny 2x64 f32", {"n_ctx": 256}, [256]),
    ("tiny 4x256 f16 v8k", {"n_embd": 256, "n_layer": 4, "n_ff": 768, "n_ctx": 4096,
                            "vocab_size": 8000, "ftype": "f16"}, [1024, 4096]),
    ("tiny 8x512 q8_0 v32k", {"n_embd": 512, "n_layer": 8, "n_head": 8, "n_kv_head": 4,
                              "n_ff": 1536, "n_ctx": 8192, "vocab_size": 32000,
                              "ftype": "q8_0"}, [2048, 8192]),
    ("tiny 12x1024 f16 v32k", {"n_embd": 1024, "n_layer": 12, "n_head": 16, "n_kv_head": 4,
                               "n_ff": 2816, "n_ctx": 16384, "vocab_size": 32000,
                               "ftype": "f16"}, [4096, 16384]),
]
GEMMA_CONTEXTS = [2048, 8192, 32768]


def measure(path: Path, n_ctx: int, swa_full: bool = True,
            engine: str = "batched") -> dict[str, object]:
    slots = N_SLOTS if engine == "batched" else 1
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(n_ctx), str(slots),
                          "1" if swa_full else "0", engine],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def row(label: str, path: Path, n_ctx: int, swa_full: bool = True,
        engine: str = "batched") -> dict[str, object]:
    """One comparison; ``engine="sequential"`` loads through ``Llama`` (flash attention off)."""
    shape = ModelShape.from_info(read_gguf_info(path))
    batched = engine == "batched"
    est = estimate(shape, LoadParams(n_ctx=n_ctx, n_seq=N_SLOTS if batched else 1,
                                     flash_attn=batched, swa_full=swa_full))
    got = measure(path, n_ctx, swa_full, engine)
    buffers = got["buffers"]
    assert isinstance(buffers, dict)
    real = sum(sum(parts.values()) for parts in buffers.values())
    if not swa_full and any(shape.swa_layers):
        label += " (SWA window cache)"
    if not batched:
        label += " (sequential, no flash attn)"
    return {"model": label, "n_ctx": n_ctx, "file_mib": path.stat().st_size / MiB,
            "estimate_mib": est.cpu.buffers / MiB, "measured_mib": real / MiB,
            "error_pct": 100 * (est.cpu.buffers - real) / real,
            "rss_mib": int(got["rss"]) / MiB}  # type: ignore[call-overload]


def cases(workdir: Path, models_dir: Path | None) -> list[tuple[str, Path, int, bool, str]]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from _harness import write_tiny_llama

    out: list[tuple[str, Path, int, bool, str]] = []
    for label, kwargs, contexts in TINY_SIZES:
        path = workdir / f"{label.replace(' ', '_')}.gguf"
        write_tiny_llama(path, **kwargs)  # type: ignore[arg-type]
        out += [(label, path, c, True, "batched") for c in contexts]
        if label.startswith("tiny 8x512"):
            out.append((label, path, contexts[-1], True, "sequential"))
    if models_dir is None:
        from llamahomed.registry.default_model import install_default_model

        gemma = install_default_model(workdir)
    else:
        gemma = models_dir / "gemma-3-270m-q4_k_m.gguf"
    out += [("gemma-3-270m Q4_K_M", gemma, c, True, "batched") for c in GEMMA_CONTEXTS]
    out += [("gemma-3-270m Q4_K_M", gemma, 32768, False, "batched"),
            ("gemma-3-270m Q4_K_M", gemma, 8192, True, "sequential")]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where gemma-3-270m-q4_k_m.gguf is (default: install a copy)")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row(*case) for case in cases(Path(tmp), args.models_dir)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| model | n_ctx | file MiB | estimate MiB | llama.cpp buffers MiB | error | RSS growth MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['n_ctx']} | {r['file_mib']:.1f} | {r['estimate_mib']:.1f} | "
              f"{r['measured_mib']:.1f} | {r['error_pct']:+.1f}% | {r['rss_mib']:.0f} |")
    worst = max(abs(float(r["error_pct"])) for r in rows)  # type: ignore[arg-type]
    print(f"\nworst error: {worst:.1f}%")
    return 0 if worst <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
