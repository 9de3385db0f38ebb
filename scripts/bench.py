"""Aggregate throughput and TTFT: llamahomed against llama.cpp's own llama-server.

    scripts/bench [--clients 1,4,8] [--tokens 128] [--threads 2] [--rounds 2] [--n-ctx 8192]
                  [--wait-idle SECONDS] [--no-llama-bench] [--out .bench/results.json]

(``scripts/bench`` builds or finds llama-server and llama-bench from the llama.cpp that the
installed llama-cpp-python vendors, with the venv's GGML flags, then runs this file.)

Both servers run the embedded Gemma 3 270M Q4_K_M with the same threads and context:

Every request's prompt is one of 8 story prompts behind a request number no other request had,
so neither server's prompt cache can shorten a prefill.

- peer: ``llama-server -m MODEL -t THREADS -c N_CTX -np MAX_CLIENTS``, ``POST /completion`` with
  ``stream: true`` (SSE), ``n_predict: TOKENS, ignore_eos: true, temperature: 0``,
  ``cache_prompt: false``;
- ours: ``llamahomed start`` with temporary state/data/config dirs and
  ``LLAMAHOME_SYSTEM_SETTINGS__N_THREADS`` / ``__N_CTX``, ``POST /api/v1/stream`` (NDJSON) with
  ``max_tokens: TOKENS, temperature: 0, repeat_penalty: 1.0`` and a stop string that never
  matches. The API has no ignore_eos, so a sequence that ends at EOS before TOKENS is counted
  with the tokens it really produced and reported as ``short``. Extra daemon settings come from
  ``LLAMAHOME_BENCH_DAEMON_ENV="K=V K2=V2"`` (e.g. ``LLAMAHOME_SYSTEM_SETTINGS__N_SLOTS=8``).

For each round and each concurrency level C a *wave* of C simultaneous streaming requests goes
to the peer, then a wave to ours, so both see the same machine conditions. A wave's aggregate
tok/s is the sum of completion tokens over the wall time of the whole wave; the table shows the
median over rounds. TTFT (request sent -> first non-empty text) p50 is over every request of
that configuration in all rounds. ``llama-bench -p 0 -n TOKENS`` (tg) runs at the end, with
both servers stopped, as the single-sequence reference.

llama.cpp's threads spin-wait, so any other CPU work on the machine (another model above all)
lowers the numbers a lot: ``--wait-idle SECONDS`` waits, before each wave, up to SECONDS for the
CPUs to be 90% idle, and discards and re-runs (``--retries``, default 3) a wave during which
other processes used more than ``--max-others`` (default 10%) of the CPUs. Every wave records
how idle the CPUs were just before it and the share other processes took during it (from
/proc: all CPU time minus this process tree's).

Writes .bench/results.json (and results.md) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _harness import (
    ROOT,
    RunningDaemon,
    daemon_dirs,
    free_port,
    spawn,
    stop_process,
    tail,
    wait_healthy,
    write_json,
)

# One prompt per client slot (client i uses PROMPTS[i % len], behind a unique request number);
# the same list for both servers.
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Describe, step by step, how bread is made from wheat in a traditional bakery.",
    "Tell a long tale about a dragon who wants to become a librarian in a small town.",
    "Explain to a child how the seasons change and why winter days are shorter.",
    "Write a detailed travel diary entry about a week spent walking in the mountains.",
    "Write the opening chapter of a mystery novel set on a night train across Europe.",
    "Describe the history of the bicycle and how it changed cities around the world.",
    "Write a letter from a sailor to his family describing a storm at sea.",
]
NEVER_MATCHES = "\u0000"
_request_numbers = itertools.count(1)


def prompt(client: int) -> str:
    """Client i's prompt, behind a number no other request had: no prompt cache can serve it."""
    return f"Request {next(_request_numbers)}. {PROMPTS[client % len(PROMPTS)]}"


def machine_info() -> dict[str, Any]:
    model, cores = platform.processor() or platform.machine(), set()
    try:
        physical = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                core = value
                cores.add((physical, core))
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "physical_cores": len(cores) or None,
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "loadavg_start": list(os.getloadavg())}


def cpu_idle(seconds: float = 1.0) -> float:
    """Fraction of all CPUs idle over the next ``seconds`` (from /proc/stat; 1.0 where unknown)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (idle1 - idle0) / max(1, total1 - total0)


def busy_ticks() -> int:
    """Clock ticks all CPUs spent busy since boot (/proc/stat; 0 where unknown)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0
    return sum(fields[:8]) - fields[3] - fields[4]


def own_ticks() -> int:
    """CPU ticks used by this process and every live descendant (both servers, the worker)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        mine.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in mine]
    return sum(ticks.get(pid, 0) for pid in mine)


def wait_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds for the CPUs to be >= 90% idle; return the idle fraction seen."""
    deadline = time.monotonic() + limit
    idle = cpu_idle()
    while idle < 0.9 and time.monotonic() < deadline:
        idle = cpu_idle(2.0)
    return idle


class Server:
    name = ""

    def __init__(self, port: int) -> None:
        self.port = port
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def request(self, prompt: str, tokens: int) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def parse(self, line: bytes) -> dict[str, Any] | None:
        """One response line -> {text} / {done, tokens, prompt_tokens, finish} / {error}; None skips it."""
        raise NotImplementedError


class LlamaServer(Server):
    name = "llama-server"

    def request(self, prompt: str, tokens: int) -> tuple[str, dict[str, Any]]:
        return f"http://127.0.0.1:{self.port}/completion", {
            "prompt": prompt, "n_predict": tokens, "ignore_eos": True, "temperature": 0,
            "repeat_penalty": 1.0, "stream": True, "cache_prompt": False}

    def parse(self, line: bytes) -> dict[str, Any] | None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return None
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return None
        event = json.loads(payload)
        if "error" in event:
            return {"error": event["error"]}
        if event.get("stop"):
            return {"done": True, "text": event.get("content", ""),
                    "tokens": event.get("tokens_predicted"), "prompt_tokens": event.get("tokens_evaluated"),
                    "finish": event.get("stop_type")}
        return {"text": event.get("content", "")}


class Daemon(Server):
    name = "llamahomed"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port)
        self.headers["Authorization"] = f"Bearer {token}"

    def request(self, prompt: str, tokens: int) -> tuple[str, dict[str, Any]]:
        return f"http://127.0.0.1:{self.port}/api/v1/stream", {
            "prompt": prompt, "max_tokens": tokens, "temperature": 0, "repeat_penalty": 1.0,
            "stop": [NEVER_MATCHES]}

    def parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        event = json.loads(line)
        if "error" in event:
            return {"error": event["error"]}
        if event.get("done"):
            usage = event.get("usage") or {}
            return {"done": True, "text": "", "tokens": usage.get("completion_tokens"),
                    "prompt_tokens": usage.get("prompt_tokens"), "finish": event.get("finish_reason")}
        return {"text": event.get("chunk", "")}


async def one_request(session: aiohttp.ClientSession, server: Server, prompt: str,
                      tokens: int) -> dict[str, Any]:
    url, body = server.request(prompt, tokens)
    started = time.perf_counter()
    result: dict[str, Any] = {"ttft_s": None, "tokens": 0, "error": None}
    try:
        async with session.post(url, json=body, headers=server.headers) as response:
            if response.status != 200:
                result["error"] = f"HTTP {response.status}: {(await response.text())[:300]}"
                return result
            async for line in response.content:
                event = server.parse(line)
                if event is None:
                    continue
                if "error" in event:
                    result["error"] = json.dumps(event["error"])[:300]
                    break
                if event.get("text") and result["ttft_s"] is None:
                    result["ttft_s"] = time.perf_counter() - started
                if event.get("done"):
                    result.update(tokens=event["tokens"] or 0, prompt_tokens=event["prompt_tokens"],
                                  finish=event["finish"])
                    break
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["total_s"] = time.perf_counter() - started
    return result


async def wave(server: Server, clients: int, tokens: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_request(session, server, prompt(i), tokens)
                                         for i in range(clients)))
        wall = time.perf_counter() - started
    produced = sum(r["tokens"] for r in results)
    return {"server": server.name, "clients": clients, "wall_s": round(wall, 3),
            "completion_tokens": produced, "agg_tok_s": round(produced / wall, 2),
            "ttft_s": [round(r["ttft_s"], 4) for r in results if r["ttft_s"] is not None],
            "short": sum(1 for r in results if not r["error"] and r["tokens"] < tokens),
            "errors": [r["error"] for r in results if r["error"]],
            "requests": results}


def measured_wave(server: Server, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """One wave, with how idle the CPUs were before and how much of them others used during it."""
    idle = wait_quiet(args.wait_idle) if args.wait_idle else cpu_idle()
    busy0, own0, started = busy_ticks(), own_ticks(), time.perf_counter()
    w = asyncio.run(wave(server, clients, args.tokens))
    busy1, own1, wall = busy_ticks(), own_ticks(), time.perf_counter() - started
    capacity = (os.cpu_count() or 1) * wall * os.sysconf("SC_CLK_TCK")
    others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / capacity) if busy1 else 0.0
    w.update(cpu_idle_before=round(idle, 3), others_cpu=round(others, 3))
    return w


def start_llama_server(bin_dir: Path, model: Path, args: argparse.Namespace, slots: int,
                       home: Path) -> tuple[subprocess.Popen[bytes], LlamaServer, list[str]]:
    port = free_port()
    cmd = [str(bin_dir / "llama-server"), "-m", str(model), "-t", str(args.threads), "-c", str(args.n_ctx),
           "-np", str(slots), "--host", "127.0.0.1", "--port", str(port)]
    log = home / "llama-server.log"
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_healthy(f"http://127.0.0.1:{port}/health", proc, log, timeout=180)
    return proc, LlamaServer(port), cmd


def limits_off() -> dict[str, str]:
    """Settings that would cut a benchmark short (idle unload, rate limit, queue wait), lifted.

    Only those this daemon's settings know: it refuses to start with an unknown one.
    """
    from llamahomed.core.settings import SystemSettings

    wanted = {"keep_alive": "3600", "max_requests_per_minute": "1000000", "queue_timeout": "3600",
              "max_streams_per_token": "10000"}
    return {f"LLAMAHOME_SYSTEM_SETTINGS__{name.upper()}": value for name, value in wanted.items()
            if name in SystemSettings.model_fields}


def start_daemon(args: argparse.Namespace, home: Path,
                 extra: dict[str, str]) -> tuple[RunningDaemon, Daemon, dict[str, str]]:
    settings = {**daemon_dirs(home), "LLAMAHOME_LOG_LEVEL": "warning",
                "LLAMAHOME_SYSTEM_SETTINGS__N_THREADS": str(args.threads),
                "LLAMAHOME_SYSTEM_SETTINGS__N_CTX": str(args.n_ctx),
                **limits_off(), **extra}
    running = spawn(home, {**os.environ, **settings}).wait_ready(timeout=180)
    return running, Daemon(running.port, running.token), settings


def daemon_config(daemon: Daemon) -> dict[str, Any]:
    """The running daemon's system settings (engine, slots, ...), for the record."""
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/api/v1/config", headers=daemon.headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response).get("system_settings", {}))
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def source_revision() -> str:
    """The checkout's commit, with '+dirty' when the working tree has changes."""
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{'+dirty' if dirty else ''}" if rev else "unknown"


def run_llama_bench(bin_dir: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(args.threads), "-p", "0",
           "-n", str(args.tokens), "-o", "json"]
    print(f"# {shlex.join(cmd)}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        return {"command": shlex.join(cmd), "error": done.stderr[-2000:]}
    rows = json.loads(done.stdout)
    row = next(r for r in rows if r.get("n_gen") == args.tokens)
    return {"command": shlex.join(cmd), "test": f"tg{args.tokens}", "avg_ts": round(row["avg_ts"], 2),
            "stddev_ts": round(row["stddev_ts"], 2), "build_commit": row.get("build_commit"),
            "cpu_info": row.get("cpu_info"), "n_threads": row.get("n_threads")}


class PeakRSS:
    """Samples the resident memory of a process and its children (workers) every 50 ms."""

    def __init__(self, pid: int) -> None:
        import threading

        import psutil

        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            try:
                procs = [self._process, *self._process.children(recursive=True)]
                total = 0
                for proc in procs:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return self.peak


def summarize(waves: list[dict[str, Any]], clients: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in ("llama-server", "llamahomed"):
        summary[name] = {}
        for c in clients:
            mine = [w for w in waves if w["server"] == name and w["clients"] == c]
            ttfts = [t for w in mine for t in w["ttft_s"]]
            summary[name][str(c)] = {
                "agg_tok_s": round(statistics.median(w["agg_tok_s"] for w in mine), 2) if mine else None,
                "agg_tok_s_rounds": [w["agg_tok_s"] for w in mine],
                "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
                "short_sequences": sum(w["short"] for w in mine),
                "errors": sum(len(w["errors"]) for w in mine),
            }
    summary["ratio"] = {}
    for c in clients:
        peer, ours = summary["llama-server"][str(c)]["agg_tok_s"], summary["llamahomed"][str(c)]["agg_tok_s"]
        summary["ratio"][str(c)] = round(ours / peer, 3) if peer and ours is not None else None
    return summary


def table(result: dict[str, Any]) -> str:
    clients = result["settings"]["clients"]
    s = result["summary"]

    def cells(values: list[Any]) -> str:
        return " | ".join("-" if v is None else str(v) for v in values)

    head = " | ".join(f"{c} client{'s' if c != 1 else ''}" for c in clients)
    lines = [f"| aggregate tok/s | {head} |", "|---|" + "---|" * len(clients)]
    for name in ("llama-server", "llamahomed"):
        lines.append(f"| {name} | {cells([s[name][str(c)]['agg_tok_s'] for c in clients])} |")
    lines.append(f"| ratio (llamahomed / llama-server) | {cells([s['ratio'][str(c)] for c in clients])} |")
    for name in ("llama-server", "llamahomed"):
        lines.append(f"| TTFT p50 ms, {name} | {cells([s[name][str(c)]['ttft_p50_ms'] for c in clients])} |")
    lines.append(f"| llamahomed sequences ended by EOS before {result['settings']['tokens']} | "
                 f"{cells([s['llamahomed'][str(c)]['short_sequences'] for c in clients])} |")
    for name in ("llama-server", "llamahomed"):
        errors = [s[name][str(c)]["errors"] for c in clients]
        if any(errors):
            lines.append(f"| failed requests, {name} (not counted in tok/s) | {cells(errors)} |")
    rss = result.get("peak_rss_mib") or {}
    if rss:
        ratio = round(rss["llamahomed"] / rss["llama-server"], 3) if rss.get("llama-server") else None
        lines.append(f"| peak RSS MiB (llamahomed = daemon + worker) | llama-server {rss.get('llama-server')} "
                     f"| llamahomed {rss.get('llamahomed')} | ratio {ratio} |")
    bench = result.get("llama_bench") or {}
    single = s["llamahomed"].get("1", {}).get("agg_tok_s")
    if "avg_ts" in bench and single:
        lines.append(f"| single stream / llama-bench tg{result['settings']['tokens']} | "
                     f"{round(single / bench['avg_ts'], 3)} | | |")
    lines.append("")
    if "avg_ts" in bench:
        lines.append(f"llama-bench {bench['test']} (1 sequence, t={result['settings']['threads']}): "
                     f"{bench['avg_ts']} ± {bench['stddev_ts']} tok/s")
    elif bench:
        lines.append(f"llama-bench failed: {bench.get('error', '')[-300:]}")
    m = result["machine"]
    lines += ["", f"machine: {m['cpu']}, {m['physical_cores']} cores / {m['logical_cpus']} logical CPUs, "
                  f"{m['system']}; load average {m['loadavg_start'][0]:.2f} at start, "
                  f"{m['loadavg_end'][0]:.2f} at end",
              f"llama.cpp: vendored by llama-cpp-python {result['build']['llama_cpp_python']}, "
              f"GGML flags: {result['build']['ggml_flags'] or '(llama.cpp defaults)'}",
              f"settings: {result['settings']['tokens']} greedy tokens per request, "
              f"threads {result['settings']['threads']}, n_ctx {result['settings']['n_ctx']}, "
              f"rounds {result['settings']['rounds']} (median shown)"]
    idles = [w["cpu_idle_before"] for w in result["waves"]]
    if idles:
        others = [w["others_cpu"] for w in result["waves"]]
        lines.append(f"CPUs idle just before a wave: {min(idles):.0%} at least; share of the CPUs other "
                     f"processes used during a wave: {max(others):.0%} at most, "
                     f"{statistics.median(others):.0%} median ({len(result['discarded_waves'])} "
                     f"busier waves discarded and run again)")
    daemon = result["settings"].get("daemon_system_settings", {})
    shown = {k: daemon[k] for k in ("engine", "n_slots", "n_threads", "n_ctx") if k in daemon}
    lines.append(f"llamahomed {result['llamahome_revision']}: "
                 + (", ".join(f"{k} {v}" for k, v in shown.items()) or "(settings unknown)"))
    if result["settings"]["daemon_extra_env"]:
        lines.append(f"daemon extra env: {result['settings']['daemon_extra_env']}")
    return "\n".join(lines)


def main() -> int:
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop both servers on the way out
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="directory with llama-server, llama-bench")
    parser.add_argument("--ggml-flags", default="", help="the CMAKE_ARGS they were built with (reported)")
    parser.add_argument("--clients", default="1,4,8", help="concurrency levels, comma-separated")
    parser.add_argument("--tokens", type=int, default=128, help="completion tokens per request")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=2, help="peer+ours waves per level; medians reported")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each wave wait up to SECONDS for the CPUs to be 90%% idle")
    parser.add_argument("--max-others", type=float, default=0.1, metavar="FRACTION",
                        help="with --wait-idle, a wave during which other processes used more than "
                             "FRACTION of the CPUs is discarded and run again (default 0.1)")
    parser.add_argument("--retries", type=int, default=3, help="at most this many re-runs per wave")
    parser.add_argument("--no-llama-bench", action="store_true", help="skip the llama-bench reference")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "results.json")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    extra = dict(kv.split("=", 1) for kv in shlex.split(os.environ.get("LLAMAHOME_BENCH_DAEMON_ENV", "")))

    import importlib.metadata

    from llamahomed.registry.default_model import install_default_model

    build_json = args.bin_dir.parent / "build.json"
    result: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "llamahome_revision": source_revision(),
        "machine": machine_info(),
        "build": {"llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
                  "ggml_flags": args.ggml_flags, "bin_dir": str(args.bin_dir),
                  **({"peer_build": json.loads(build_json.read_text())} if build_json.exists() else {})},
        "settings": {"clients": clients, "tokens": args.tokens, "threads": args.threads,
                     "n_ctx": args.n_ctx, "rounds": args.rounds, "wait_idle_s": args.wait_idle,
                     "max_others": args.max_others,
                     "daemon_extra_env": extra,
                     "prompts": PROMPTS},
    }
    m = result["machine"]
    print(f"# machine: {m['cpu']}, {m['physical_cores']} cores / {m['logical_cpus']} logical CPUs, "
          f"load {m['loadavg_start'][0]:.2f}", file=sys.stderr)
    if m["loadavg_start"][0] > 0.5:
        print("# warning: the machine is busy (load average above 0.5); llama.cpp's threads spin-wait, "
              "so other CPU work (another model above all) lowers both sides' numbers a lot",
              file=sys.stderr)
    print(f"# GGML flags: {args.ggml_flags}", file=sys.stderr)

    waves: list[dict[str, Any]] = []
    discarded: list[dict[str, Any]] = []
    peer_proc: subprocess.Popen[bytes] | None = None
    ours_daemon: RunningDaemon | None = None
    with tempfile.TemporaryDirectory(prefix="llamahome-bench-") as tmp:
        home = Path(tmp)
        model = install_default_model(home / "data" / "models")
        result["model"] = {"file": model.name, "bytes": model.stat().st_size}
        try:
            peer_proc, peer, peer_cmd = start_llama_server(args.bin_dir, model, args, max(clients), home)
            ours_daemon, ours, ours_env = start_daemon(args, home, extra)
            rss = {"llama-server": PeakRSS(peer_proc.pid), "llamahomed": PeakRSS(ours_daemon.proc.pid)}
            result["settings"]["llama_server_command"] = shlex.join(peer_cmd).replace(str(home), "$TMP")
            result["settings"]["daemon_env"] = {k: v.replace(str(home), "$TMP") for k, v in ours_env.items()}
            result["settings"]["daemon_system_settings"] = daemon_config(ours)
            for server in (peer, ours):  # load the model / start the worker, then warm up
                warm = asyncio.run(wave(server, 1, 8))
                if warm["errors"]:
                    raise SystemExit(f"{server.name} warm-up failed: {warm['errors']}")
            for r in range(args.rounds):
                for c in clients:
                    for server in (peer, ours):
                        for attempt in range(1 + (args.retries if args.wait_idle else 0)):
                            w = measured_wave(server, c, args)
                            w["round"] = r + 1
                            retry = w["others_cpu"] > args.max_others and attempt < (
                                args.retries if args.wait_idle else 0)
                            print(f"# round {r + 1} {server.name:12s} {c} clients: {w['agg_tok_s']:7.2f} tok/s "
                                  f"({w['completion_tokens']} tokens in {w['wall_s']:.1f}s, "
                                  f"{w['short']} short, {len(w['errors'])} errors; CPU "
                                  f"{w['cpu_idle_before']:.0%} idle before, {w['others_cpu']:.0%} used by "
                                  f"others during{'; discarded, again' if retry else ''})", file=sys.stderr)
                            for error in w["errors"][:2]:
                                print(f"#   error: {error}", file=sys.stderr)
                            if not retry:
                                waves.append(w)
                                break
                            discarded.append(w)
            result["peak_rss_mib"] = {name: round(r.stop() / 2**20, 1) for name, r in rss.items()}
        finally:
            stop_process(peer_proc)
            if ours_daemon is not None:
                ours_daemon.stop()
            result["logs_tail"] = {"llama-server": tail(home / "llama-server.log", 5),
                                   "llamahomed": tail(home / "daemon.log", 10)}
        if not args.no_llama_bench and args.wait_idle:
            wait_quiet(args.wait_idle)
        result["llama_bench"] = {} if args.no_llama_bench else run_llama_bench(args.bin_dir, model, args)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["summary"] = summarize(waves, clients)
    result["waves"] = waves
    result["discarded_waves"] = discarded
    markdown = table(result)
    write_json(args.out, result)
    args.out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    print(f"\n# written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
