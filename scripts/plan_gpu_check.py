#!/usr/bin/env python3
"""The planner on a real GPU: plan, load through the daemon's worker, compare with NVML.

For a model (a .gguf, or ``--synthetic-1b`` to write the Llama-3.2-1B shape of the GPU README):

1. read the machine and plan the load (variant, GPU layers, n_ctx, KV type);
2. start the daemon's worker process with the plan's settings, generate ``--tokens`` greedy
   tokens, and read the GPU memory NVML reports used before the load and after the decode;
3. the same with ``n_gpu_layers = 0`` for the CPU-only speed.

It prints the plan, estimate vs NVML delta (and llama.cpp's own buffer sizes), whether the load
ran out of memory, and decode tokens/s on the GPU plan vs the CPU. On a machine without NVML it
still runs the loads and says so. Run it on the lent GPU machine (docs/Planner.md).

    python scripts/plan_gpu_check.py MODEL.gguf [--ctx 4096] [--tokens 128]
    python scripts/plan_gpu_check.py --synthetic-1b q4 --ctx 4096
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamahomed.engine.config import LoadConfig  # noqa: E402
from llamahomed.engine.handle import WorkerHandle  # noqa: E402
from llamahomed.engine.protocol import Done, Failed  # noqa: E402
from llamahomed.engine.protocol import SamplingParams  # noqa: E402
from llamahomed.planner import Candidate, ModelShape, PlanRequest, plan  # noqa: E402
from llamahomed.registry.gguf_meta import read_gguf_info  # noqa: E402
from llamahomed.core.resources import read_machine, read_nvml  # noqa: E402

MiB = 2**20
PROMPT = "The history of the printing press begins"


def gpu_used() -> int | None:
    gpus, _ = read_nvml()
    return sum(g.used for g in gpus) if gpus else None


async def run_load(config: LoadConfig, tokens: int) -> dict[str, Any]:
    before = gpu_used()
    worker = WorkerHandle(config)
    started = time.perf_counter()
    try:
        await worker.start(600)
    except Exception as exc:  # noqa: BLE001 - an OOM at load is a result here
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    load_s = time.perf_counter() - started
    try:
        stream = await worker.submit(PROMPT, SamplingParams(max_tokens=tokens, temperature=0.0))
        done: dict[str, Any] = {}
        async for event in stream.events():
            if isinstance(event, (Done, Failed)):
                done = event.wire()
        after = gpu_used()
    finally:
        await worker.stop()
    decode_ms = done.get("timings", {}).get("decode_ms", 0.0)
    generated = done.get("usage", {}).get("completion_tokens", 0)
    return {"ok": done.get("kind") == "done", "error": done.get("message"),
            "load_s": round(load_s, 2), "buffers": worker.info.get("buffers", {}),
            "nvml_delta": None if before is None or after is None else after - before,
            "tokens_per_second": round((generated - 1) / (decode_ms / 1000), 1)
            if decode_ms > 0 and generated > 1 else None}


def synthetic_1b(kind: str, workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from _harness import write_tiny_llama

    path = workdir / f"llama-1b-shape-{kind}.gguf"
    if not path.exists():
        write_tiny_llama(path, n_embd=2048, n_layer=16, n_head=32, n_kv_head=8, n_ff=8192,
                         n_ctx=131072, vocab_size=128256, ftype={"q4": "q8_0", "f16": "f16"}[kind])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--synthetic-1b", choices=["q4", "f16"],
                        help="write the 1B Llama shape (q4 writes Q8_0: the generator has no K-quants)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--engine", choices=["batched", "sequential"], default="batched")
    args = parser.parse_args(argv)
    path = synthetic_1b(args.synthetic_1b, args.workdir) if args.synthetic_1b else args.model
    if path is None:
        parser.error("give a MODEL or --synthetic-1b")
    info = read_gguf_info(path)
    candidate = Candidate(path.name, info.quantization, info.file_size, ModelShape.from_info(info))
    machine = read_machine()
    batched = args.engine == "batched"
    request = PlanRequest(n_ctx=args.ctx, n_ctx_explicit=True, n_seq=8 if batched else 1,
                          flash_attn=batched)
    result = plan([candidate], machine, request)
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "options"}, indent=1))
    if result.choice is None:
        return 1
    p = result.choice.params
    gpu = LoadConfig(model_id="check", model_path=str(path), n_ctx=p.n_ctx, n_batch=result.n_batch,
                     n_threads=result.n_threads, n_gpu_layers=p.n_gpu_layers,
                     n_slots=request.n_seq, engine=args.engine, n_ubatch=p.n_ubatch,
                     kv_type=p.kv_type, swa_full=p.swa_full)
    on_gpu = asyncio.run(run_load(gpu, args.tokens))
    on_cpu = asyncio.run(run_load(dataclasses.replace(gpu, n_gpu_layers=0), args.tokens))
    est = result.choice.estimate
    report = {"plan_gpu_layers": p.n_gpu_layers, "estimate_vram_mib": round(est.vram / MiB),
              "estimate_gpu_buffers_mib": round(sum(g.buffers for g in est.gpus) / MiB),
              "gpu_run": on_gpu, "cpu_run": on_cpu}
    delta = on_gpu.get("nvml_delta")
    if delta:
        report["nvml_delta_mib"] = round(delta / MiB)
        report["estimate_error_pct"] = round(100 * (est.vram - delta) / delta, 1)
    if p.n_gpu_layers and on_gpu.get("tokens_per_second") and on_cpu.get("tokens_per_second"):
        report["speedup_over_cpu"] = round(on_gpu["tokens_per_second"] / on_cpu["tokens_per_second"], 2)
    print(json.dumps(report, indent=1))
    return 0 if on_gpu["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
