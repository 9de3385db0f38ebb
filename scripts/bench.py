"""Throughput, TTFT, prefill, latency under a long prompt, and a copy task: llamahomed against
llama.cpp's own llama-server.

    scripts/bench [--clients 1,4,8,16,32] [--tokens 128] [--threads 2] [--rounds 3] [--n-ctx 8192]
                  [--sampling greedy|default|both] [--workloads throughput,prefill,mixed,copy]
                  [--prefill-tokens 2000] [--mixed-streams 4] [--mixed-tokens 256]
                  [--copy-paragraphs 2] [--wait-idle SECONDS] [--no-llama-bench] [--markdown]

(``scripts/bench`` builds or finds llama-server and llama-bench from the llama.cpp that the
installed llama-cpp-python vendors, with the venv's GGML flags, then runs this file.)

Both servers run the embedded Gemma 3 270M Q4_K_M with the same threads and context. Every
prompt starts with a request number no other request had, so no prompt cache can shorten a
prefill (llama-server also gets ``cache_prompt: false``). Requests, sampling modes and slot
semantics: ``_bench_servers.py``; the workloads: ``_bench_workloads.py``.

- throughput: for each width C (``--clients``) both servers are started with C slots
  (``llama-server -np C -kvu``, daemon ``n_slots`` C), then per round and per sampling mode a
  wave of C simultaneous streams goes to llama-server, then one to ours. Aggregate tok/s =
  completion tokens / wall time of the wave (median over rounds), TTFT p50 over all requests,
  peak RSS per width (llamahomed = daemon + worker).
- prefill: one ``--prefill-tokens`` prompt, 1 token, prefill tok/s = prompt tokens / TTFT,
  against ``llama-bench -p 512`` (pp512).
- mixed: ``--mixed-streams`` greedy streams of ``--mixed-tokens``, alone and with the long
  prompt arriving ``--mixed-delay`` s later: inter-token latency p50/p99 of the running streams
  (whole run; and over the gaps while the long prompt prefills), the long prompt's TTFT.
- copy: "Copy this text exactly: <paragraph>", greedy, one stream, decode tok/s (what
  prompt-lookup decoding speeds up; whatever the daemon's ``speculative`` setting does).
  The extra workloads run on one pair started with ``max(8, mixed streams + 1)`` slots.

``llama-bench -p 512 -n TOKENS`` runs at the end with both servers stopped. ``--wait-idle``
waits for quiet CPUs before each measurement and re-runs throughput waves that others disturbed.
Writes ``.bench/<UTC time>-<commit>.json`` (machine, commit, settings, every raw wave) and
``.bench/results.json`` / ``results.md`` (the latest); ``--markdown`` prints only the tables.
Extra daemon settings: ``LLAMAHOME_BENCH_DAEMON_ENV="K=V K2=V2"``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench_workloads as work
from _bench_machine import PeakRSS, machine_info, source_revision, wait_quiet
from _bench_report import markdown, summarize
from _bench_servers import SAMPLING_MODES, daemon_config, start_daemon, start_llama_server
from _harness import ROOT, RunningDaemon, stop_process, tail, write_json

WORKLOADS = ("throughput", "prefill", "mixed", "copy")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", type=Path, required=True, help="directory with llama-server, llama-bench")
    p.add_argument("--ggml-flags", default="", help="the CMAKE_ARGS they were built with (reported)")
    p.add_argument("--clients", default="1,4,8,16,32", help="concurrency levels (= slots), comma-separated")
    p.add_argument("--tokens", type=int, default=128, help="completion tokens per throughput request")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=8192, help="total KV context, shared by all slots on both")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measurement; medians reported")
    p.add_argument("--sampling", choices=("greedy", "default", "both"), default="both")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"any of {','.join(WORKLOADS)}")
    p.add_argument("--prefill-tokens", type=int, default=2000, help="long prompt size (prefill, mixed)")
    p.add_argument("--mixed-streams", type=int, default=4)
    p.add_argument("--mixed-tokens", type=int, default=256, help="tokens per running stream")
    p.add_argument("--mixed-delay", type=float, default=2.0, help="seconds before the long prompt arrives")
    p.add_argument("--copy-paragraphs", type=int, default=2, help="paragraphs the copy task repeats")
    p.add_argument("--copy-tokens", type=int, default=256, help="max tokens of the copy")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each measurement wait up to SECONDS for the CPUs to be 90%% idle")
    p.add_argument("--max-others", type=float, default=0.1, metavar="FRACTION",
                   help="with --wait-idle, a wave during which other processes used more than "
                        "FRACTION of the CPUs is discarded and run again (default 0.1)")
    p.add_argument("--retries", type=int, default=3, help="at most this many re-runs per wave")
    p.add_argument("--no-llama-bench", action="store_true", help="skip the llama-bench reference")
    p.add_argument("--markdown", action="store_true", help="print only the markdown tables on stdout")
    p.add_argument("--out-dir", type=Path, default=ROOT / ".bench")
    args = p.parse_args()
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.sampling = list(SAMPLING_MODES) if args.sampling == "both" else [args.sampling]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


class Pair:
    """Both servers started with the same slots; stopped (and their peak RSS read) on exit."""

    def __init__(self, args: argparse.Namespace, model: Path, home: Path, slots: int,
                 extra: dict[str, str]) -> None:
        self.args, self.model, self.home, self.slots, self.extra = args, model, home, slots, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.daemon: RunningDaemon | None = None
        self.rss_mib: dict[str, float] = {}

    def __enter__(self) -> "Pair":
        self.proc, self.peer, self.peer_cmd = start_llama_server(self.args.bin_dir, self.model, self.args,
                                                                 self.slots, self.home)
        self.daemon, self.ours, self.env = start_daemon(self.args, self.home, self.slots, self.extra)
        self._rss = {"llama-server": PeakRSS(self.proc.pid), "llamahomed": PeakRSS(self.daemon.proc.pid)}
        for server in (self.peer, self.ours):  # load the model / start the worker, then warm up
            import asyncio

            warm = asyncio.run(work.wave(server, 1, 8))
            if warm["errors"]:
                raise SystemExit(f"{server.name} warm-up failed: {warm['errors']}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.rss_mib = {name: round(r.stop() / 2**20, 1) for name, r in getattr(self, "_rss", {}).items()}
        stop_process(self.proc)
        if self.daemon is not None:
            self.daemon.stop()

    def record(self, result: dict[str, Any]) -> None:
        st = result["settings"]
        st.setdefault("llama_server_commands", {})[str(self.slots)] = \
            shlex.join(self.peer_cmd).replace(str(self.home), "$TMP")
        st["daemon_env"] = {k: v.replace(str(self.home), "$TMP") for k, v in self.env.items()}
        st["daemon_system_settings"] = daemon_config(self.ours)


def new_result(args: argparse.Namespace, extra: dict[str, str]) -> dict[str, Any]:
    build_json = args.bin_dir.parent / "build.json"
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "llamahome_revision": source_revision(),
        "machine": machine_info(),
        "build": {"llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
                  "ggml_flags": args.ggml_flags, "bin_dir": str(args.bin_dir),
                  **({"peer_build": json.loads(build_json.read_text())} if build_json.exists() else {})},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
                    | {"daemon_extra_env": extra, "prompts": work.PROMPTS},
        "waves": [], "discarded_waves": [], "peak_rss_mib": {},
    }


def run_throughput(args: argparse.Namespace, model: Path, home: Path, extra: dict[str, str],
                   result: dict[str, Any]) -> None:
    for c in args.clients:
        with Pair(args, model, home, c, extra) as pair:
            pair.record(result)
            for r in range(args.rounds):
                for sampling in args.sampling:
                    result["waves"] += work.throughput_rounds((pair.peer, pair.ours), c, args, sampling,
                                                              r + 1, result["discarded_waves"])
        result["peak_rss_mib"][str(c)] = pair.rss_mib


def run_extra(args: argparse.Namespace, model: Path, home: Path, extra: dict[str, str],
              result: dict[str, Any]) -> None:
    wanted = [w for w in ("prefill", "mixed", "copy") if w in args.workloads]
    if not wanted:
        return
    with Pair(args, model, home, max(8, args.mixed_streams + 1), extra) as pair:
        pair.record(result)
        both = (pair.peer, pair.ours)
        text = work.long_text(pair.peer, args.prefill_tokens) if {"prefill", "mixed"} & set(wanted) else ""
        if "prefill" in wanted:
            result["prefill"] = work.prefill(both, text, args)
        if "mixed" in wanted:
            result["mixed"] = work.mixed(both, text, args)
        if "copy" in wanted:
            result["copy"] = work.speculative(both, args)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop both servers on the way out
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args()
    extra = dict(kv.split("=", 1) for kv in shlex.split(os.environ.get("LLAMAHOME_BENCH_DAEMON_ENV", "")))
    from llamahomed.registry.default_model import install_default_model

    result = new_result(args, extra)
    m = result["machine"]
    print(f"# machine: {m['cpu']}, {m['physical_cores']} cores / {m['logical_cpus']} logical CPUs, "
          f"load {m['loadavg_start'][0]:.2f}; GGML flags: {args.ggml_flags}", file=sys.stderr)
    if m["loadavg_start"][0] > 0.5:
        print("# warning: the machine is busy (load average above 0.5); llama.cpp's threads spin-wait, "
              "so other CPU work (another model above all) lowers both sides' numbers a lot",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="llamahome-bench-") as tmp:
        home = Path(tmp)
        model = install_default_model(home / "data" / "models")
        result["model"] = {"file": model.name, "bytes": model.stat().st_size}
        try:
            if "throughput" in args.workloads:
                run_throughput(args, model, home, extra, result)
            run_extra(args, model, home, extra, result)
        finally:
            result["logs_tail"] = {"llama-server": tail(home / "llama-server.log", 5),
                                   "llamahomed": tail(home / "daemon.log", 10)}
        if not args.no_llama_bench and args.wait_idle:
            wait_quiet(args.wait_idle)
        result["llama_bench"] = {} if args.no_llama_bench else work.run_llama_bench(args.bin_dir, model, args)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["summary"] = summarize(result)
    text = markdown(result)
    stamp = result["created"].replace(":", "").replace("-", "")
    out = args.out_dir / f"{stamp}-{result['llamahome_revision']}.json"
    write_json(out, result)
    write_json(args.out_dir / "results.json", result)
    (args.out_dir / "results.md").write_text(text + "\n")
    print(text if args.markdown else json.dumps(result["summary"], indent=2))
    print(f"\n# written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
