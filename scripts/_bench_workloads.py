"""What scripts/bench measures on a running pair of servers (see bench.py's docstring):
throughput waves, prefill of a long prompt, a long prompt arriving among running streams,
a copy task (the case prompt-lookup decoding speeds up), and llama-bench's reference.

Every prompt starts with a request number no other request had, so no prompt cache (prefix
reuse) can shorten a prefill.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench_machine import busy_ticks, cpu_idle, own_ticks, wait_quiet
from _bench_servers import LlamaServer, Server, one_request, session
from _harness import percentile

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
# Filler for the long prompt (repeated and numbered until it is long enough) and the copy task.
PARAGRAPH = (
    "The old harbour town wakes slowly. Fishing boats come back before dawn, their crews "
    "unloading crates of silver fish onto the stone quay while gulls circle overhead. By seven "
    "the bakery on the corner has its shutters up, and the smell of fresh bread drifts down "
    "the narrow streets toward the market square, where farmers from the hills set out "
    "baskets of apples, cheese wrapped in cloth, and jars of dark honey."
)
_request_numbers = itertools.count(1)


def numbered(text: str) -> str:
    """``text`` behind a number no other request had: no prompt cache can serve it."""
    return f"Request {next(_request_numbers)}. {text}"


def prompt(client: int) -> str:
    return numbered(PROMPTS[client % len(PROMPTS)])


def long_text(peer: LlamaServer, target: int) -> str:
    """About ``target`` tokens of numbered paragraphs (counted with llama-server's tokenizer)."""
    per = max(1, peer.tokenize(PARAGRAPH))
    parts = [f"Part {i + 1}. {PARAGRAPH}" for i in range(max(1, target // (per + 4)))]
    text = " ".join(parts)
    while parts and peer.tokenize(text) > target:
        parts.pop()
        text = " ".join(parts)
    return "Read the following notes and summarise them.\n\n" + text + "\n\nSummary:"


# ---- throughput waves -------------------------------------------------------------------------

async def wave(server: Server, clients: int, tokens: int, sampling: str = "greedy") -> dict[str, Any]:
    async with session() as s:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_request(s, server, prompt(i), tokens, sampling)
                                         for i in range(clients)))
        wall = time.perf_counter() - started
    produced = sum(r["tokens"] for r in results)
    return {"server": server.name, "clients": clients, "sampling": sampling, "wall_s": round(wall, 3),
            "completion_tokens": produced, "agg_tok_s": round(produced / wall, 2),
            "ttft_s": [round(r["ttft_s"], 4) for r in results if r["ttft_s"] is not None],
            "short": sum(1 for r in results if not r["error"] and r["tokens"] < tokens),
            "errors": [r["error"] for r in results if r["error"]],
            "requests": results}


def measured_wave(server: Server, clients: int, args: argparse.Namespace, sampling: str) -> dict[str, Any]:
    """One wave, with how idle the CPUs were before and how much of them others used during it."""
    idle = wait_quiet(args.wait_idle) if args.wait_idle else cpu_idle()
    busy0, own0, started = busy_ticks(), own_ticks(), time.perf_counter()
    w = asyncio.run(wave(server, clients, args.tokens, sampling))
    busy1, own1, wall = busy_ticks(), own_ticks(), time.perf_counter() - started
    capacity = (os.cpu_count() or 1) * wall * os.sysconf("SC_CLK_TCK")
    others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / capacity) if busy1 else 0.0
    w.update(cpu_idle_before=round(idle, 3), others_cpu=round(others, 3))
    return w


def throughput_rounds(pair: tuple[Server, Server], clients: int, args: argparse.Namespace,
                      sampling: str, round_no: int, discarded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One round at one width and sampling mode: a wave to llama-server, then one to ours; with
    --wait-idle a wave that others disturbed is discarded and run again."""
    kept = []
    retries = args.retries if args.wait_idle else 0
    for server in pair:
        for attempt in range(1 + retries):
            w = measured_wave(server, clients, args, sampling)
            w["round"] = round_no
            retry = w["others_cpu"] > args.max_others and attempt < retries
            print(f"# round {round_no} {sampling:7s} {server.name:12s} {clients} clients: "
                  f"{w['agg_tok_s']:7.2f} tok/s ({w['completion_tokens']} tokens in {w['wall_s']:.1f}s, "
                  f"{w['short']} short, {len(w['errors'])} errors; CPU {w['cpu_idle_before']:.0%} idle "
                  f"before, {w['others_cpu']:.0%} used by others during"
                  f"{'; discarded, again' if retry else ''})", file=sys.stderr)
            for error in w["errors"][:2]:
                print(f"#   error: {error}", file=sys.stderr)
            if not retry:
                kept.append(w)
                break
            discarded.append(w)
    return kept


# ---- prefill ---------------------------------------------------------------------------------

def prefill(pair: tuple[Server, Server], text: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One long prompt, one request, 1 token: prefill tok/s = prompt tokens / TTFT (and
    llama-server's own timings.prompt_per_second)."""
    async def one(server: Server) -> dict[str, Any]:
        async with session() as s:
            r = await one_request(s, server, numbered(text), 1)
        # a first token with no text of its own (part of a UTF-8 character): the whole request
        tokens, ttft = r.get("prompt_tokens") or 0, r["ttft_s"] or (None if r["error"] else r["total_s"])
        row = {"server": server.name, "prompt_tokens": tokens, "error": r["error"],
               "ttft_ms": round(ttft * 1000, 1) if ttft else None,
               "prefill_tok_s": round(tokens / ttft, 1) if ttft and tokens else None}
        timings = r.get("timings") or {}
        if "prompt_per_second" in timings:
            row["server_prompt_tok_s"] = round(timings["prompt_per_second"], 1)
        return row

    rows = []
    for round_no in range(args.rounds):
        for server in pair:
            if args.wait_idle:
                wait_quiet(args.wait_idle)
            row = asyncio.run(one(server))
            row["round"] = round_no + 1
            print(f"# prefill round {round_no + 1} {server.name:12s}: {row['prompt_tokens']} tokens, "
                  f"TTFT {row['ttft_ms']} ms, {row['prefill_tok_s']} tok/s", file=sys.stderr)
            rows.append(row)
    return rows


# ---- a long prompt arriving among running streams --------------------------------------------

def gaps(arrivals: list[float], start: float | None = None, end: float | None = None) -> list[float]:
    """Inter-token gaps (s) of one stream; with a window, only gaps that overlap [start, end]."""
    out = []
    for a, b in zip(arrivals, arrivals[1:]):
        if start is None or end is None or (b > start and a < end):
            out.append(b - a)
    return out


def latency(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    if not ms:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(percentile(ms, 0.99) or 0.0, 1), "max_ms": round(max(ms), 1)}


async def mixed_once(server: Server, text: str, args: argparse.Namespace, arrive: bool) -> dict[str, Any]:
    """``--mixed-streams`` streams of ``--mixed-tokens``; with ``arrive`` the long prompt is sent
    ``--mixed-delay`` seconds after them (8 tokens). ITL over the streams' whole run, and, with the
    arrival, over the gaps that overlap [long prompt sent, its first token]."""
    async with session() as s:
        tasks = [asyncio.create_task(one_request(s, server, prompt(i), args.mixed_tokens, "greedy",
                                                 stamps=True))
                 for i in range(args.mixed_streams)]
        long: dict[str, Any] | None = None
        if arrive:  # the streams are decoding by then (an early finish ends the wait)
            await asyncio.wait(tasks, timeout=args.mixed_delay)
            long = await one_request(s, server, numbered(text), 8)
        streams = await asyncio.gather(*tasks)
    row: dict[str, Any] = {"server": server.name, "arrival": arrive,
                           "errors": [r["error"] for r in streams if r["error"]],
                           "stream_tokens": [r["tokens"] for r in streams]}
    if long is None:
        row["itl"] = latency([g for r in streams for g in gaps(r["arrivals"])])
        return row
    sent, ttft = long["sent"], long["ttft_s"]
    end = sent + ttft if ttft else sent + long["total_s"]
    row.update(long_ttft_ms=round(ttft * 1000, 1) if ttft else None,
               long_prompt_tokens=long.get("prompt_tokens"), long_error=long["error"],
               itl=latency([g for r in streams for g in gaps(r["arrivals"])]),
               itl_during_prefill=latency([g for r in streams for g in gaps(r["arrivals"], sent, end)]))
    return row


def mixed(pair: tuple[Server, Server], text: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for round_no in range(args.rounds):
        for server in pair:
            for arrive in (False, True):
                if args.wait_idle:
                    wait_quiet(args.wait_idle)
                row = asyncio.run(mixed_once(server, text, args, arrive))
                row["round"] = round_no + 1
                window = row.get("itl_during_prefill", row["itl"])
                print(f"# mixed round {round_no + 1} {server.name:12s} arrival={arrive}: ITL p50 "
                      f"{window['p50_ms']} p99 {window['p99_ms']} ms, long TTFT {row.get('long_ttft_ms')} ms, "
                      f"{len(row['errors'])} errors", file=sys.stderr)
                rows.append(row)
    return rows


# ---- copy task (prompt lookup) ---------------------------------------------------------------

def speculative(pair: tuple[Server, Server], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One greedy stream asked to copy a paragraph: decode tok/s after the first token.
    Neither side gets ignore_eos: both stop where the model ends the copy."""
    paragraph = " ".join([PARAGRAPH] * max(1, args.copy_paragraphs))
    text = f"Copy this text exactly:\n\n{paragraph}\n\nCopy:\n"

    async def one(server: Server) -> dict[str, Any]:
        async with session() as s:
            r = await one_request(s, server, numbered(text), args.copy_tokens, "greedy", ignore_eos=False)
        decode_s = r["total_s"] - (r["ttft_s"] or 0)
        row = {"server": server.name, "tokens": r["tokens"], "finish": r.get("finish"), "error": r["error"],
               "decode_tok_s": round((r["tokens"] - 1) / decode_s, 2) if r["tokens"] > 1 and decode_s > 0
               else None}
        if r.get("extra"):
            row["daemon_done"] = r["extra"]
        timings = r.get("timings") or {}
        if "predicted_per_second" in timings:
            row["server_decode_tok_s"] = round(timings["predicted_per_second"], 2)
        return row

    rows = []
    for round_no in range(args.rounds):
        for server in pair:
            if args.wait_idle:
                wait_quiet(args.wait_idle)
            row = asyncio.run(one(server))
            row["round"] = round_no + 1
            print(f"# copy round {round_no + 1} {server.name:12s}: {row['tokens']} tokens, "
                  f"{row['decode_tok_s']} tok/s", file=sys.stderr)
            rows.append(row)
    return rows


# ---- llama-bench -----------------------------------------------------------------------------

def run_llama_bench(bin_dir: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``llama-bench -p 512 -n TOKENS``: pp512 (prefill) and tgTOKENS (one-sequence decode)."""
    cmd = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(args.threads), "-p", "512",
           "-n", str(args.tokens), "-o", "json"]
    print(f"# {shlex.join(cmd)}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"command": shlex.join(cmd), "error": done.stderr[-2000:]}
    out: dict[str, Any] = {"command": shlex.join(cmd)}
    for row in json.loads(done.stdout):
        test = f"pp{row['n_prompt']}" if row.get("n_prompt") else f"tg{row.get('n_gen')}"
        out[test] = {"avg_ts": round(row["avg_ts"], 2), "stddev_ts": round(row["stddev_ts"], 2)}
        out.update(build_commit=row.get("build_commit"), cpu_info=row.get("cpu_info"),
                   n_threads=row.get("n_threads"))
    return out
