#!/usr/bin/env python3
"""Time to first token of a long prompt, by where its prefix comes from (in process, Gemma).

One engine with the RAM state cache on; a ~1000-token "system prompt" followed by a short
question. Each case reports the engine's prefill time (admission to first token)::

    cold    nothing cached: the whole prompt is prefilled
    slot    the same prompt again: its KV is still in the slot
    ram     two other long prompts took the slot in between: restored from saved state
    shared  a running sequence holds the prefix: its cells are shared (seq_cp); the prompt
            differs from the running one's after the system prompt

    .venv/bin/python scripts/bench_prompt_cache.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from _harness import Collector

from llamahomed.engine.worker.batched import BatchedEngine
from llamahomed.engine.protocol import SamplingParams

SYSTEM = ("You are a careful assistant for a hardware shop. Answer in one short sentence, "
          "name the aisle, and never invent products that are not on the list. ") * 30
QUESTION = "Where are the hammers?"
OTHER = "Tell me a long story about the sea, the wind and a small boat. " * 30


def run(engine: BatchedEngine, emit: Collector, seq: int, prompt: str, tokens: int = 4) -> dict[str, Any]:
    engine.submit(seq, prompt, SamplingParams(max_tokens=tokens, temperature=0.0))
    emit.wait(lambda: seq in emit.done)
    return emit.done[seq]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from llamahomed.registry.default_model import install_default_model

            args.model = install_default_model(Path(tmp))
        emit = Collector()
        engine = BatchedEngine.load({"model_path": str(args.model), "n_ctx": 8192, "n_batch": 512,
                                     "n_threads": args.threads, "n_gpu_layers": 0, "n_slots": 2,
                                     "state_cache_bytes": 1 << 30}, emit)
        thread = threading.Thread(target=engine.run, daemon=True)
        thread.start()
        times: dict[str, list[float]] = {"cold": [], "slot": [], "ram": [], "shared": []}
        hits: dict[str, int] = {}
        seq = 0
        try:
            for r in range(args.runs):
                prompt = f"[{r}] " + SYSTEM + QUESTION  # a new prefix each run: cold really is
                cases = [("cold", prompt), ("slot", prompt),
                         (None, OTHER + str(r)), (None, OTHER + "x" + str(r)), ("ram", prompt)]
                for name, text in cases:
                    seq += 1
                    done = run(engine, emit, seq, text)
                    if name:
                        assert name != "cold" or done["cache"]["hit_tokens"] < 8, done["cache"]
                        times[name].append(done["timings"]["prefill_ms"])
                        hits[name] = done["cache"]["hit_tokens"]
                        print(f"run {r} {name:<6} prefill {done['timings']['prefill_ms']:8.1f} ms "
                              f"cache {done['cache']}", flush=True)
                seq += 1
                holder, system = seq, f"<{r}> " + SYSTEM  # a fresh prefix, prefilled by the holder
                engine.submit(holder, system + QUESTION,
                              SamplingParams(max_tokens=400, temperature=0.0))
                emit.wait(lambda: holder in emit.first)
                seq += 1
                done = run(engine, emit, seq, system + "Where is the paint?")
                times["shared"].append(done["timings"]["prefill_ms"])
                hits["shared"] = done["cache"]["hit_tokens"]
                print(f"run {r} shared prefill {done['timings']['prefill_ms']:8.1f} ms "
                      f"cache {done['cache']}", flush=True)
                engine.cancel(holder)
                emit.wait(lambda: holder in emit.done)
        finally:
            engine.stop()
            thread.join(timeout=10)
        print(f"\nprompt tokens: {emit.done[1]['usage']['prompt_tokens']}")
        print("| source | prefill ms (median) | reused tokens |\n|---|---|---|")
        for name, values in times.items():
            print(f"| {name} | {statistics.median(values):.1f} | {hits.get(name, 0)} |")


if __name__ == "__main__":
    main()
