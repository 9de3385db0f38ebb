#!/usr/bin/env python3
"""Aggregate decode throughput of an engine, in process (no daemon, no sockets).

For each concurrency N: submit N greedy requests at once (distinct prompts, ``--tokens`` each),
wait until all are done, report sum(completion_tokens) / wall time from submit to last done::

    .venv/bin/python scripts/bench_engine.py --threads 2 --tokens 128 --concurrency 1 4 8
    .venv/bin/python scripts/bench_engine.py --engine sequential --concurrency 1 4

Without ``--model`` it uses the embedded Gemma 3 270M (assembled into a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import Collector

from llamahomed.engine.protocol import SamplingParams

PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain in detail how a steam engine works.",
    "List the history of the Roman Empire, century by century.",
    "Describe a walk through a busy market in Marrakesh.",
    "Write a letter from a sailor to his family, telling of his voyage.",
    "Explain how to plant and care for a vegetable garden.",
    "Tell the story of the first people to climb a great mountain.",
    "Describe how a city changes from dawn until midnight.",
]


def load(args: argparse.Namespace, emit: Collector) -> Any:
    config: dict[str, Any] = {"model_path": str(args.model), "n_ctx": args.n_ctx,
                              "n_batch": args.n_batch, "n_threads": args.threads,
                              "n_gpu_layers": 0, "n_slots": args.slots,
                              "kv_unified": not args.split_kv, "prompt_cache": False,
                              "flash_attn": args.flash_attn}
    if args.engine == "sequential":
        from llamahomed.engine.worker.sequential import SequentialEngine

        return SequentialEngine.load(config, emit)
    from llamahomed.engine.worker.batched import BatchedEngine

    return BatchedEngine.load(config, emit)


def bench(args: argparse.Namespace, concurrency: int, first_id: int) -> tuple[float, int]:
    """One fresh engine, a warm-up request, then ``concurrency`` requests at once."""
    emit = Collector()
    engine = load(args, emit)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        engine.submit(first_id, "Hello", SamplingParams(max_tokens=4, temperature=0.0))
        emit.wait_done([first_id], 120)
        params = SamplingParams(max_tokens=args.tokens, temperature=0.0, repeat_penalty=1.0)
        ids = [first_id + 1 + i for i in range(concurrency)]
        start = time.perf_counter()
        for i, seq_id in enumerate(ids):
            engine.submit(seq_id, PROMPTS[i % len(PROMPTS)], params)
        emit.wait_done(ids, 600)
        elapsed = time.perf_counter() - start
    finally:
        engine.stop()
        thread.join(timeout=10)
    tokens = sum(emit.done[s].get("usage", {}).get("completion_tokens", 0) for s in ids)
    return tokens / elapsed, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--engine", choices=("batched", "sequential"), default="batched")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--split-kv", action="store_true", help="kv_unified = False")
    parser.add_argument("--flash-attn", type=lambda v: {"on": True, "off": False}.get(v),
                        default=None, help="on | off (default: llama.cpp's auto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from llamahomed.registry.default_model import install_default_model

            args.model = install_default_model(Path(tmp))
        for n, concurrency in enumerate(args.concurrency):
            rate, tokens = bench(args, concurrency, 1000 * (n + 1))
            print(f"{args.engine} x{concurrency}: {rate:6.1f} tok/s aggregate "
                  f"({tokens} tokens)", flush=True)


if __name__ == "__main__":
    main()
