"""Single-stream decode speed: /api/v1/stream on the real daemon vs llama-cpp-python directly.

    .venv/bin/python scripts/bench_stream.py [--tokens 128] [--threads 2] [--runs 3]

Starts ``llamahomed start`` on a free port with temporary dirs and the embedded Gemma model,
streams ``--tokens`` greedy tokens per run, and in the same invocation runs llama-cpp-python's
``Llama.generate`` on the same file, threads and context, and llama.cpp's own ``llama-bench``
(``tg<tokens>``, the binary ``scripts/bench --build-only`` builds and caches), interleaving all
three. Decode tok/s is (tokens - 1) / (time from the first token to the last); TTFT is reported
separately.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _harness import RunningDaemon, daemon_dirs, spawn

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def start_daemon(home: Path, threads: int, n_ctx: int) -> RunningDaemon:
    env = {**os.environ, **daemon_dirs(home),
           "LLAMAHOME_SYSTEM_SETTINGS__N_THREADS": str(threads),
           "LLAMAHOME_SYSTEM_SETTINGS__N_CTX": str(n_ctx), "LLAMAHOME_LOG_LEVEL": "warning"}
    return spawn(home, env).wait_ready(timeout=120)


def stream_once(port: int, token: str, n_tokens: int) -> tuple[float, float, int]:
    body = json.dumps({"prompt": PROMPT, "max_tokens": n_tokens, "temperature": 0,
                       "stop": ["\u0000"]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/stream", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    started = time.perf_counter()
    first = last = 0.0
    generated = 0
    with urllib.request.urlopen(request, timeout=300) as response:
        for line in response:
            now = time.perf_counter()
            event = json.loads(line)
            if "chunk" in event:
                first = first or now
                last = now
            elif event.get("done"):
                generated = event["usage"]["completion_tokens"]
    return first - started, (generated - 1) / (last - first), generated


def direct_once(llm: object, n_tokens: int) -> tuple[float, float, int]:
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)  # type: ignore[attr-defined]
    llm.reset()  # type: ignore[attr-defined]
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    for _ in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):  # type: ignore[attr-defined]
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
        if count >= n_tokens:
            break
    return first - started, (count - 1) / (last - first), count


def find_llama_bench() -> Path | None:
    """The llama-bench that ``scripts/bench`` built (the llama.cpp llama-cpp-python vendors)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llamahome" / "llama.cpp"
    found = sorted(cache.glob("*/bin/llama-bench"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def llama_bench_once(binary: Path, model: Path, threads: int, n_tokens: int) -> float:
    out = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", "0",
                          "-n", str(n_tokens), "-r", "1", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    return float(json.loads(out)[0]["avg_ts"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args()

    import llama_cpp

    from llamahomed.registry.default_model import install_default_model

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = install_default_model(home / "data" / "models")
        daemon = start_daemon(home, args.threads, args.n_ctx)
        port, token = daemon.port, daemon.token
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=args.n_ctx, n_threads=args.threads,
                              n_batch=512, verbose=False)
        bench = find_llama_bench()
        try:
            stream_once(port, token, 8)  # load the worker
            direct_once(llm, 8)
            streamed, direct, peer = [], [], []
            for _ in range(args.runs):
                streamed.append(stream_once(port, token, args.tokens))
                direct.append(direct_once(llm, args.tokens))
                if bench is not None:
                    peer.append(llama_bench_once(bench, model, args.threads, args.tokens))
        finally:
            daemon.stop()
    d_tps = statistics.median(r[1] for r in streamed)
    l_tps = statistics.median(r[1] for r in direct)
    print(json.dumps({
        "tokens": args.tokens, "threads": args.threads, "runs": args.runs,
        "daemon_stream": {"decode_tok_s": round(d_tps, 1),
                          "ttft_ms": round(statistics.median(r[0] for r in streamed) * 1000, 1)},
        "llama_cpp_python": {"decode_tok_s": round(l_tps, 1),
                             "ttft_ms": round(statistics.median(r[0] for r in direct) * 1000, 1)},
        "ratio": round(d_tps / l_tps, 3),
        "llama_bench": ({"tg_tok_s": round(statistics.median(peer), 1),
                         "ratio_daemon_stream": round(d_tps / statistics.median(peer), 3)}
                        if peer else "not built: run scripts/bench --build-only"),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
