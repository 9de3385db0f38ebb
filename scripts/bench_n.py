"""``n`` choices vs separate requests: one ``/v1/completions`` with ``n=4`` against 4 concurrent
requests with ``n=1``, on the real daemon and the embedded Gemma 3 270M.

    .venv/bin/python scripts/bench_n.py [--n 4] [--tokens 128] [--threads 2] [--rounds 3]
                                        [--temperature 0.7] [--n-ctx 4096]

Starts ``llamahomed start`` on a free port with temporary dirs (``_harness``). Every choice
asks ``max_tokens: TOKENS`` at ``temperature`` with a ``logit_bias`` of -100 on each of the
model's end-of-generation tokens, so each runs to TOKENS like llama-server's ``ignore_eos``
(completion tokens are counted from the usage anyway, so a short one is counted as it is).
Each round sends one ``n``-choice request, then ``n`` separate requests at once, each with a
prompt no earlier round used (a request number in front), so only sharing within the round
helps. Aggregate tok/s is the completion tokens over the wall time of the whole request(s);
the median over rounds is printed as JSON.

The n-choice request decodes its prompt once and its choices share the prompt's KV; the
separate requests prefill it each (or share a live one's prefix when the worker admits them
in different steps). Decode itself is the same batched step either way, so the gap is mostly
the prefill and queueing: expect it to grow with the prompt and to shrink with ``--tokens``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _harness import RunningDaemon, daemon_dirs, spawn

PROMPT = ("Below is a short story written for a children's magazine. It tells of a lighthouse "
          "keeper on a small island who finds a message in a bottle one stormy night, and of "
          "the journey she makes to answer it. The story is told in the first person, in a "
          "warm and simple voice.\n\nThe story:\n")


def start_daemon(home: Path, threads: int, n_ctx: int, slots: int) -> RunningDaemon:
    env = {**os.environ, **daemon_dirs(home),
           "LLAMAHOME_SYSTEM_SETTINGS__N_THREADS": str(threads),
           "LLAMAHOME_SYSTEM_SETTINGS__N_CTX": str(n_ctx),
           "LLAMAHOME_SYSTEM_SETTINGS__N_SLOTS": str(slots), "LLAMAHOME_LOG_LEVEL": "warning"}
    return spawn(home, env).wait_ready(timeout=120)


def end_tokens(model: Path) -> dict[str, float]:
    """A -100 bias for each end-of-generation token of the model (OpenAI's logit_bias)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ends = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    llm.close()
    return {str(t): -100.0 for t in ends}


async def complete(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with session.post(url, json=body) as response:
        data = await response.json()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data}")
        return int(data["usage"]["completion_tokens"])


async def run(port: int, token: str, args: argparse.Namespace,
              bias: dict[str, float]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/completions"
    base = {"max_tokens": args.tokens, "temperature": args.temperature, "logit_bias": bias,
            "seed": 1234}
    rounds: dict[str, list[dict[str, float]]] = {"n_choices": [], "separate": []}
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        await complete(session, url, {**base, "prompt": "warm up", "max_tokens": 4})
        for number in range(args.rounds):
            prompt = f"Request {2 * number}. {PROMPT}"
            started = time.perf_counter()
            tokens = await complete(session, url, {**base, "prompt": prompt, "n": args.n})
            rounds["n_choices"].append(measure(tokens, time.perf_counter() - started))
            prompt = f"Request {2 * number + 1}. {PROMPT}"
            started = time.perf_counter()
            counts = await asyncio.gather(*(
                complete(session, url, {**base, "prompt": prompt, "seed": 1234 + i})
                for i in range(args.n)))
            rounds["separate"].append(measure(sum(counts), time.perf_counter() - started))
    summary = {name: {"tok_s": round(statistics.median(r["tok_s"] for r in runs), 1),
                      "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
                      "completion_tokens": int(statistics.median(r["tokens"] for r in runs))}
               for name, runs in rounds.items()}
    ratio = summary["n_choices"]["tok_s"] / max(summary["separate"]["tok_s"], 1e-9)
    return {"n": args.n, "tokens": args.tokens, "threads": args.threads,
            "rounds": args.rounds, **summary, "ratio_tok_s": round(ratio, 3), "per_round": rounds}


def measure(tokens: int, seconds: float) -> dict[str, float]:
    return {"tokens": tokens, "wall_s": round(seconds, 3), "tok_s": round(tokens / seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args()

    from llamahomed.registry.default_model import install_default_model

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = install_default_model(home / "data" / "models")
        bias = end_tokens(model)
        daemon = start_daemon(home, args.threads, args.n_ctx, max(4, args.n))
        try:
            result = asyncio.run(run(daemon.port, daemon.token, args, bias))
        finally:
            daemon.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
