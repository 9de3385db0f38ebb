#!/usr/bin/env python3
"""Single-stream tok/s with prompt-lookup speculative decoding on and off, in process.

Two workloads, each greedy, one request at a time on a fresh batched engine per setting:
``quote`` asks the model to repeat a passage (the drafts come from the prompt), ``story``
asks for new text (few drafts; the adaptive pause should keep the cost near zero)::

    .venv/bin/python scripts/bench_spec.py --threads 2 --tokens 128 --rounds 3
    .venv/bin/python scripts/bench_spec.py --tokens 8 --rounds 1     # a smoke run

Without ``--model`` it uses the embedded Gemma 3 270M (assembled into a temporary folder).
Prints, per workload and setting, the median tok/s (completion tokens over the wall time
from submit to done) and the drafted / accepted token counts of the engine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import Collector

from llamahomed.engine.protocol import SamplingParams

PASSAGE = ("The old lighthouse stood at the edge of the cliff for more than a century. Every "
           "night its keeper climbed the one hundred and twelve steps, trimmed the wick, wound "
           "the clockwork and watched the beam sweep across the dark water, counting the ships "
           "that passed safely by.")
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}
SAMPLED = {"temperature": 1.0, "top_k": 40, "top_p": 0.95, "repeat_penalty": 1.1, "seed": 7}
WORKLOADS = {  # name: (prompt, sampling); "sampled" is the one where drafts rarely hold
    "quote": (f"Repeat the following text exactly, word for word.\n\nText: {PASSAGE}\n\n"
              f"Repeated text:", GREEDY),
    "story": ("Write a long story about a dragon who learns to cook.", GREEDY),
    "sampled": ("Write a long story about a dragon who learns to cook.", SAMPLED),
}


def run(args: argparse.Namespace, prompt: str, sampling: dict[str, Any],
        speculative: str) -> tuple[float, int, int]:
    """One engine; a warm-up, then ``rounds`` requests; median tok/s, drafted, accepted."""
    from llamahomed.engine.worker.batched import BatchedEngine

    emit = Collector()
    engine = BatchedEngine.load(
        {"model_path": str(args.model), "n_ctx": args.n_ctx, "n_threads": args.threads,
         "n_gpu_layers": 0, "n_slots": 1, "prompt_cache": False,
         "speculative": speculative, "draft_max": args.draft_max}, emit)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    rates: list[float] = []
    try:
        engine.submit(0, "Hello", SamplingParams(max_tokens=4, temperature=0.0))
        emit.wait_done([0], 120)
        params = SamplingParams(max_tokens=args.tokens, **sampling)
        for seq_id in range(1, args.rounds + 1):
            start = time.perf_counter()
            engine.submit(seq_id, prompt, params)
            emit.wait_done([seq_id], 600)
            tokens = emit.done[seq_id].get("usage", {}).get("completion_tokens", 0)
            rates.append(tokens / (time.perf_counter() - start))
    finally:
        engine.stop()
        thread.join(timeout=10)
    stats: Any = engine.draft_stats
    return statistics.median(rates), stats.drafted, stats.accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from llamahomed.registry.default_model import install_default_model

            args.model = install_default_model(Path(tmp))
        for name, (prompt, sampling) in WORKLOADS.items():
            for speculative in ("off", "ngram"):
                rate, drafted, accepted = run(args, prompt, sampling, speculative)
                print(f"{name:7} {speculative:5}: {rate:6.1f} tok/s  drafted {drafted} "
                      f"accepted {accepted}", flush=True)


if __name__ == "__main__":
    main()
