#!/usr/bin/env python3
"""One model across two local ``llamahomed rpc serve`` processes against the same model loaded
locally, in process (the batched engine, no daemon): load time, decode tokens per second, and
what the RPC link carries per generated token (bytes sent and received on the connections to
the servers, from ``ss -tin``; Linux)::

    .venv/bin/python scripts/bench_rpc.py --threads 1 --tokens 64          # tiny model and Gemma
    .venv/bin/python scripts/bench_rpc.py --model path/to/model.gguf --threads 2

Both runs use the same thread count (the local engine's, and each server's), no flash attention
and plain (not repacked) CPU weights, as an RPC server has; every layer and the output head go
to the servers, half each, so each token's logits cross the link. Loopback has no real network latency: on two machines
add the round trips of each decode step.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import Collector, write_tiny_llama

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.protocol import SamplingParams
from tests.fixtures.rpc import rpc_server

PROMPT = "Write a long story about a dragon who learns to cook."


def link_bytes(ports: list[int]) -> int:
    """Bytes sent plus received on the TCP connections to ``ports`` (``ss -tin``)."""
    if not ports:
        return 0
    filters = " or ".join(f"dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tinH", f"( {filters} )"], capture_output=True, text=True,
                         check=False).stdout
    return sum(int(n) for n in re.findall(r"bytes_(?:sent|received):(\d+)", out))


class TextCollector(Collector):
    """Also keeps each sequence's text."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[int, str] = {}

    def __call__(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["kind"] == "text":
                self.text[event["seq"]] = self.text.get(event["seq"], "") + event.get("text", "")
        super().__call__(events)


def run(config: LoadConfig, tokens: int, ports: list[int]) -> dict[str, Any]:
    from llamahomed.engine.worker.batched import BatchedEngine

    emit = TextCollector()
    started = time.perf_counter()
    engine = BatchedEngine.load(config, emit)
    load_s = time.perf_counter() - started
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        engine.submit(1, "Hello", SamplingParams(max_tokens=4, temperature=0.0))
        emit.wait_done([1], 300)
        before = link_bytes(ports)
        start = time.perf_counter()
        engine.submit(2, PROMPT, SamplingParams(max_tokens=tokens, temperature=0.0))
        emit.wait_done([2], 900)
        wall = time.perf_counter() - start
        moved = link_bytes(ports) - before
    finally:
        engine.stop()
        thread.join(timeout=10)
    done = emit.done[2]
    n = done.get("usage", {}).get("completion_tokens", 0)
    decode_ms = float(done.get("timings", {}).get("decode_ms", 0.0)) or wall * 1000
    return {"load_s": round(load_s, 3), "tokens": n,
            "decode_tok_s": round(n / (decode_ms / 1000), 1) if n else None,
            "ms_per_token": round(decode_ms / n, 2) if n else None,
            "rpc_bytes_per_token": round(moved / n) if n and ports else 0,
            "text": emit.text.get(2, "")}


def compare(model: Path, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    base = LoadConfig(model_path=str(model), n_ctx=args.n_ctx, n_slots=1, n_threads=args.threads,
                      prompt_cache=False, flash_attn=False, repack=False)
    local = run(base, args.tokens, [])
    with rpc_server(log_dir, threads=args.threads) as a, rpc_server(log_dir, threads=args.threads) as b:
        from llamahomed.registry.gguf_meta import read_gguf_info

        n_layer = read_gguf_info(model).block_count or 0
        remote_layers = n_layer + 1  # every layer and the output head (llama.cpp's positions)
        half = remote_layers // 2
        split = base.model_copy(update={
            "n_gpu_layers": remote_layers, "rpc_servers": (a.endpoint, b.endpoint),
            "devices": (f"rpc:{a.endpoint}#0", f"rpc:{b.endpoint}#0"),
            "tensor_split": (float(half), float(remote_layers - half))})
        remote = run(split, args.tokens, [a.port, b.port])
    cost = (remote["ms_per_token"] or 0) - (local["ms_per_token"] or 0)
    same = local.pop("text") == remote.pop("text")
    return {"model": model.name, "threads": args.threads, "local": local, "split_2_rpc": remote,
            "rpc_cost_ms_per_token": round(cost, 2), "same_text": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, action="append")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model
        if not models:
            from llamahomed.registry.default_model import install_default_model

            models = [write_tiny_llama(Path(tmp) / "tiny-llama.gguf", n_ctx=1024),
                      install_default_model(Path(tmp) / "gemma")]
        results = [compare(m, args, Path(tmp)) for m in models]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
