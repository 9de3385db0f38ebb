#!/usr/bin/env python3
"""What a grammar costs per token: decode speed with and without one, in process (no daemon).

One batched engine on the model; for each case one request at a time (after a warm-up), decode
tokens per second from the ``done`` event's timings (``completion_tokens / decode_ms``)::

    .venv/bin/python scripts/bench_grammar.py --threads 4 --tokens 64 --repeat 3

Cases: greedy and sampled (temperature 0.8), each plain, with the generic JSON grammar
(``format: "json"``) and with a JSON Schema grammar. The prompts ask for long JSON strings so
the grammar does not end the document early. Without ``--model`` it uses the embedded
Gemma 3 270M (a 262k-token vocabulary: the grammar checks every entry at each step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from _harness import Collector, write_json

from llamahomed.engine.grammar import json_grammar, schema_grammar
from llamahomed.engine.protocol import SamplingParams

PROMPT = ('Write a long story about a dragon who learns to cook, as JSON: '
          '{"title": "...", "story": "...')
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"},
                                           "story": {"type": "string"}},
          "required": ["title", "story"], "additionalProperties": False}


def cases(tokens: int) -> dict[str, SamplingParams]:
    greedy = {"max_tokens": tokens, "temperature": 0.0, "repeat_penalty": 1.0}
    sampled = {"max_tokens": tokens, "temperature": 0.8, "seed": 7}
    out: dict[str, SamplingParams] = {}
    for name, base in (("greedy", greedy), ("sampled", sampled)):
        out[f"{name}"] = SamplingParams(**base)  # type: ignore[arg-type]
        out[f"{name}+json"] = SamplingParams(**base, grammar=json_grammar())  # type: ignore[arg-type]
        out[f"{name}+schema"] = SamplingParams(**base, grammar=schema_grammar(SCHEMA))  # type: ignore[arg-type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the embedded Gemma 3 270M)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from llamahomed.registry.default_model import install_default_model

            model = install_default_model(Path(tmp))
        results = run(model, args)
    print(f"{'case':<16} {'tok/s':>8} {'ms/token':>9} {'tokens':>7}")
    base = {name.split("+")[0]: r["tok_s"] for name, r in results.items() if "+" not in name}
    for name, r in results.items():
        cost = "" if "+" not in name else f"  ({r['tok_s'] / base[name.split('+')[0]]:.0%} of plain)"
        print(f"{name:<16} {r['tok_s']:>8.1f} {r['ms_per_token']:>9.2f} {r['tokens']:>7}{cost}")
    if args.out:
        write_json(args.out, {"model": str(args.model or "gemma3-270m"), "threads": args.threads,
                              "results": results})


def run(model: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from llamahomed.engine.worker.batched import BatchedEngine

    emit = Collector()
    engine = BatchedEngine.load({"model_path": str(model), "n_ctx": 1024, "n_batch": 256,
                                 "n_threads": args.threads, "n_gpu_layers": 0, "n_slots": 1,
                                 "prompt_cache": False}, emit)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    seq = 0
    results: dict[str, dict[str, Any]] = {}
    try:
        seq += 1
        engine.submit(seq, "Hello", SamplingParams(max_tokens=8, temperature=0.0))
        emit.wait_done([seq])
        for name, params in cases(args.tokens).items():
            speeds, tokens = [], 0
            for _ in range(args.repeat):
                seq += 1
                engine.submit(seq, PROMPT, params)
                emit.wait_done([seq])
                done = emit.done[seq]
                if done["kind"] != "done":
                    raise RuntimeError(f"{name}: {done}")
                n = done["usage"]["completion_tokens"]
                # decode_ms runs from the first token: n - 1 decode steps
                speeds.append((n - 1) / max(done["timings"]["decode_ms"], 1e-6) * 1000)
                tokens += n
            tok_s = statistics.median(speeds)
            results[name] = {"tok_s": round(tok_s, 2), "ms_per_token": round(1000 / tok_s, 2),
                             "tokens": tokens, "runs": [round(s, 2) for s in speeds]}
    finally:
        engine.stop()
        thread.join(timeout=60)
    return results


if __name__ == "__main__":
    main()
