#!/usr/bin/env python3
"""Cold start: ``llamahomed start`` -> daemon ready -> first streamed token, and a reload.

Each run starts a fresh daemon (temporary state/data/config dirs, the embedded Gemma 3 270M
in a temporary store, 2 threads) and reports, in seconds from the ``Popen``:

    ready    ``/health`` answers 200 (the daemon is listening)
    first    the first non-empty chunk of ``POST /api/v1/stream`` sent at ``ready`` (the model
             loads on demand: a worker process, llama.cpp, the model, one prefill)
    reload   after an unload (Ollama ``keep_alive: 0``), seconds from sending the next stream
             request to its first chunk (the cost an idle unload brings back)

    .venv/bin/python scripts/bench_coldstart.py --runs 3
    LLAMAHOME_SYSTEM_SETTINGS__SPARE_WORKER=false .venv/bin/python scripts/bench_coldstart.py

Numbers on a shared, loaded machine are rough: compare medians from the same session.
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

from _harness import daemon_dirs, free_port, stop_process

MODEL = "gemma3-270m"


def _post(url: str, token: str, body: dict[str, object]) -> float:
    """Send ``body``; seconds until the first NDJSON line with text (or the end)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    sent = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
        for raw in response:
            line = json.loads(raw)
            if line.get("chunk") or line.get("response") or line.get("done"):
                first = time.perf_counter() - sent
                response.read()
                return first
    return time.perf_counter() - sent


def _wait_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"daemon exited with {proc.returncode}")


def one_run(home: Path, models: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAHOME_")
           or k.startswith("LLAMAHOME_SYSTEM_SETTINGS__SPARE")}
    env.update(daemon_dirs(home), LLAMAHOME_MODELS_DIR=str(models),
               LLAMAHOME_INSTALL_DEFAULT_MODEL="false",
               LLAMAHOME_SYSTEM_SETTINGS__N_THREADS="2",
               LLAMAHOME_SYSTEM_SETTINGS__MAX_REQUESTS_PER_MINUTE="1000000")
    url = f"http://127.0.0.1:{port}"
    with (home / "daemon.log").open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "llamahomed", "start", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_health(f"{url}/health", proc)
            ready = time.perf_counter() - started
            token = (home / "state" / "admin.token").read_text().strip()
            body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4,
                    "temperature": 0}
            first = ready + _post(f"{url}/api/v1/stream", token, body)
            _post(f"{url}/api/generate", token, {"model": MODEL, "prompt": "", "keep_alive": 0})
            time.sleep(3.0)  # the spare (if any) is replaced in the background (2 s after a take)
            reload = _post(f"{url}/api/v1/stream", token, body)
        finally:
            stop_process(proc)
    return {"ready": ready, "first": first, "reload": reload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from llamahomed.registry.default_model import install_gemma

        models = Path(tmp) / "models"
        install_gemma(models)
        rows = []
        for i in range(args.runs):
            home = Path(tmp) / f"run{i}"
            home.mkdir()
            row = one_run(home, models)
            rows.append(row)
            print(f"run {i}: " + "  ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    print("\n| seconds (median of %d) | ready | first token | reload after unload |" % len(rows))
    print("|---|---|---|---|")
    print("| llamahomed | " + " | ".join(f"{statistics.median(r[k] for r in rows):.2f}"
                                          for k in ("ready", "first", "reload")) + " |")


if __name__ == "__main__":
    main()
