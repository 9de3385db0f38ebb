#!/usr/bin/env python3
"""A bounded load test: N concurrent clients for S seconds against a daemon on loopback.

By default it starts its own ``llamahomed`` with the tiny random model, a small rate limit and a
small queue, so that it sees all three answers a loaded daemon gives: 2xx, 429 (over the token's
rate limit) and 503 (queue full). Every answer must be one of those, and every 429 and 503 must
carry ``Retry-After``; the daemon must still answer ``/health`` at the end; its memory (RSS,
sampled every second) must stay flat. It exits 0 only when all of that held::

    .venv/bin/python scripts/loadtest.py                      # 50 clients, 60 s
    .venv/bin/python scripts/loadtest.py --clients 20 --seconds 30 --json report.json
    .venv/bin/python scripts/loadtest.py --url http://127.0.0.1:8910 --token-file TOKEN

With ``--url`` it tests a running daemon with one token (``--pid`` adds RSS sampling). Only
loopback addresses are accepted. Every client stops at the deadline; each request has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import psutil
from _harness import ROOT, daemon_dirs, percentile, spawn, write_json, write_tiny_llama

sys.path.insert(0, str(ROOT / "client"))

GOOD = {429, 503}


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


@dataclass
class Memory:
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, daemon, workers)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        daemon = [s[1] for s in self.samples]
        total = [s[1] + s[2] for s in self.samples]
        mib = 2**20
        return {"samples": len(self.samples),
                "daemon_rss_mib": {"start": round(daemon[0] / mib, 1), "end": round(daemon[-1] / mib, 1),
                                   "max": round(max(daemon) / mib, 1)},
                "with_workers_rss_mib": {"start": round(total[0] / mib, 1),
                                         "end": round(total[-1] / mib, 1),
                                         "max": round(max(total) / mib, 1)}}


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OwnDaemon:
    """``llamahomed start`` on a free loopback port with the tiny model and tight limits."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llamahome-load-"))
        models = self.dir / "models"
        models.mkdir()
        write_tiny_llama(models / "tiny-llama.gguf", n_ctx=256)
        config = self.dir / "config.toml"
        config.write_text(
            f"header_timeout = {args.slow_timeout}\nbody_timeout = {args.slow_timeout}\n"
            '[model_settings]\ndefault_model = "tiny-llama"\n'
            f"max_tokens = {args.max_tokens}\ntemperature = 0.0\n"
            f"[system_settings]\nn_slots = {args.slots}\nmax_queue = {args.queue}\n"
            f"queue_timeout = 5.0\nn_threads = 1\n"
            f"[rate_limits.tiers.basic]\nrpm = {args.rpm}\nburst = {args.burst}\n"
            "[rate_limits.tiers.enterprise]\nrpm = 1000\nburst = 100\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAHOME_")}
        env.update(daemon_dirs(self.dir), LLAMAHOME_CONFIG_FILE=str(config),
                   LLAMAHOME_INSTALL_DEFAULT_MODEL="false", LLAMAHOME_LOG_LEVEL="warning")
        self.daemon = spawn(self.dir, env, args=["--models-dir", str(models)])
        self.proc = self.daemon.proc

    async def wait_ready(self, timeout: float = 60) -> None:
        await asyncio.to_thread(self.daemon.wait_ready, timeout)
        self.url = self.daemon.url

    def tokens(self, n_subjects: int, tier: str = "basic", name: str = "load") -> list[str]:
        """One inference token per subject in ``tier``, signed with the daemon's secret."""
        from llamahome.auth import TokenGenerator

        secret = (self.dir / "state" / "secret.key").read_text().strip()
        generator = TokenGenerator(secret_key=secret)
        return [generator.create_token(f"{name}-{i}", expires_in=3600, scopes=("inference",),
                                       tier=tier) for i in range(n_subjects)]

    def stop(self) -> int | None:
        return self.daemon.stop(timeout=30)


REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/v1/process", {"prompt": "the quick brown fox"}),
    ("POST", "/api/v1/process", {"prompt": "once upon a time", "max_tokens": 4}),
    ("POST", "/api/v1/stream", {"prompt": "tell me a story"}),
    ("POST", "/api/v1/batch", {"prompts": ["a", "b", "c"], "max_tokens": 2}),
    ("GET", "/api/v1/models", None),
]


async def client(i: int, url: str, token: str, deadline: float, session: aiohttp.ClientSession,
                 tally: Tally, max_requests: int) -> None:
    rng = random.Random(i)
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            return
        method, path, body = rng.choice(REQUESTS)
        started = time.monotonic()
        try:
            async with session.request(method, url + path, json=body, headers=headers) as response:
                await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            tally.bad.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.1)
            continue
        tally.latencies.append(time.monotonic() - started)
        tally.statuses[status] += 1
        tally.by_route[f"{method} {path} {status}"] += 1
        if 200 <= status < 300:
            continue
        if status in GOOD and retry_after is not None and retry_after.isdigit():
            # a real client waits Retry-After; a load test waits less, to keep the pressure on
            await asyncio.sleep(min(float(retry_after), 0.5) * rng.uniform(0.5, 1.0))
            continue
        tally.bad.append(f"{method} {path}: status {status}, Retry-After {retry_after!r}")


async def slow_clients(url: str, token: str, n: int, wait: float,
                       session: aiohttp.ClientSession) -> dict[str, Any]:
    """``n`` connections that never finish their request (half the headers, or a body that
    trickles), held open; meanwhile an ordinary request must still be served. Reports how many
    the daemon closed, and how fast."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    opened, closed_after, refused, busy = 0, [], 0, 0

    async def hold(i: int) -> None:
        nonlocal opened, refused, busy
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            refused += 1
            return
        opened += 1
        if i % 2:  # incomplete headers
            writer.write(b"GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        else:  # complete headers, a body that never arrives
            writer.write(b"POST /api/v1/process HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Authorization: Bearer " + token.encode() + b"\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        answer, eof = b"", False
        try:
            while not eof and time.monotonic() - started < wait:
                chunk = await asyncio.wait_for(reader.read(1024),
                                               max(0.1, wait - (time.monotonic() - started)))
                answer += chunk
                eof = not chunk
        except (OSError, asyncio.TimeoutError):
            pass
        if eof:
            closed_after.append(time.monotonic() - started)
            busy += answer.startswith(b"HTTP/1.1 503")  # over the connection cap: refused
        writer.close()

    holders = [asyncio.ensure_future(hold(i)) for i in range(n)]
    await asyncio.sleep(1.0)
    started = time.monotonic()
    async with session.post(f"{url}/api/v1/process", json={"prompt": "still here?"},
                            headers={"Authorization": f"Bearer {token}"}) as response:
        await response.read()
        served = response.status
    served_ms = round((time.monotonic() - started) * 1000, 1)
    await asyncio.gather(*holders)
    return {"connections": n, "opened": opened, "refused_at_connect": refused,
            "closed_by_daemon": len(closed_after), "answered_503_busy": busy,
            "closed_after_s": {"max": round(max(closed_after), 1) if closed_after else None,
                               "p50": round(percentile(closed_after, 0.5) or 0, 1)},
            "ordinary_request_meanwhile": {"status": served, "ms": served_ms},
            "ok": served == 200 and len(closed_after) + refused == n}


async def batch_flood(url: str, heavy: str, light: str, seconds: float, batch: int,
                      session: aiohttp.ClientSession) -> dict[str, Any]:
    """One user floods the model with batches as fast as it can; another sends one request at a
    time. Fair sharing means the flood slows its sender: the light user is not refused."""
    deadline = time.monotonic() + seconds
    heavy_items: Counter[str] = Counter()
    light_statuses: Counter[int] = Counter()

    async def flood() -> None:
        while time.monotonic() < deadline:
            body = {"prompts": [f"flood {i}" for i in range(batch)], "max_tokens": 16}
            async with session.post(f"{url}/api/v1/batch", json=body,
                                    headers={"Authorization": f"Bearer {heavy}"}) as response:
                data = await response.json()
                if response.status != 200:
                    heavy_items[f"http_{response.status}"] += 1
                    await asyncio.sleep(0.2)
                    continue
            for result in data["results"]:
                heavy_items[result["error"]["code"] if "error" in result else "ok"] += 1

    async def trickle() -> None:
        while time.monotonic() < deadline:
            async with session.post(f"{url}/api/v1/process", json={"prompt": "my turn"},
                                    headers={"Authorization": f"Bearer {light}"}) as response:
                await response.read()
                light_statuses[response.status] += 1
                if response.status in GOOD:
                    await asyncio.sleep(min(float(response.headers.get("Retry-After", 1)), 1.0))

    await asyncio.gather(flood(), flood(), flood(), trickle())
    return {"heavy_items": dict(heavy_items),
            "light_statuses": {str(k): v for k, v in light_statuses.items()},
            "ok": light_statuses.get(200, 0) > 0 and light_statuses.get(503, 0) == 0}


async def sample_memory(pid: int, memory: Memory, stop: asyncio.Event, every: float = 1.0) -> None:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    started = time.monotonic()
    while not stop.is_set():
        try:
            daemon = proc.memory_info().rss
            workers = sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            return
        memory.samples.append((round(time.monotonic() - started, 1), daemon, workers))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    own: OwnDaemon | None = None
    if args.url:
        if not is_loopback(args.url):
            raise SystemExit("--url must be a loopback address (127.0.0.0/8, ::1, localhost)")
        url = args.url.rstrip("/")
        token = Path(args.token_file).read_text().strip() if args.token_file else args.token
        if not token:
            raise SystemExit("--url needs --token or --token-file")
        tokens, pid = [token], args.pid
    else:
        own = OwnDaemon(args)
        await own.wait_ready()
        url, tokens, pid = own.url, own.tokens(args.subjects), own.proc.pid
    tally, memory, stop = Tally(), Memory(), asyncio.Event()
    try:
        timeout = aiohttp.ClientTimeout(total=args.request_timeout)
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async with session.post(f"{url}/api/v1/process", json={"prompt": "warm up"},
                                    headers={"Authorization": f"Bearer {tokens[0]}"}) as warm:
                await warm.read()  # the model is loaded before memory is first sampled
            sampler = asyncio.create_task(sample_memory(pid, memory, stop)) if pid else None
            started = time.monotonic()
            deadline = started + args.seconds
            await asyncio.gather(*(client(i, url, tokens[i % len(tokens)], deadline, session, tally,
                                          args.max_requests_per_client)
                                   for i in range(args.clients)))
            elapsed = time.monotonic() - started
            # The mixed load's kept-alive connections count against the daemon's per-peer cap:
            # the phases start from none.
            await connector.close()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            phases: dict[str, Any] = {}
            if "slow" in args.phases:
                phases["slow_clients"] = await slow_clients(url, tokens[0], args.slow_clients,
                                                            args.slow_wait, session)
            if "flood" in args.phases and own is not None:  # two users with room in their tiers
                heavy, light = own.tokens(2, tier="enterprise", name="flood")
                phases["batch_flood"] = await batch_flood(url, heavy, light, args.flood_seconds,
                                                          args.queue, session)
            stop.set()
            if sampler:
                await sampler
            async with session.get(f"{url}/health") as health:
                alive = health.status == 200
    finally:
        code = own.stop() if own else None
    total = sum(tally.statuses.values())
    lat = tally.latencies
    report: dict[str, Any] = {
        "clients": args.clients, "seconds": round(elapsed, 1), "requests": total,
        "requests_per_second": round(total / elapsed, 1) if elapsed else 0,
        "by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
        "by_route": dict(sorted(tally.by_route.items())),
        "latency_ms": {q: round(value * 1000, 1) if (value := percentile(lat, f)) is not None
                       else None for q, f in (("p50", 0.5), ("p99", 0.99))},
        "bad_answers": len(tally.bad), "bad_examples": tally.bad[:10],
        "connection_errors": dict(tally.errors),
        "daemon_alive_at_end": alive, "daemon_exit_code": code,
        "memory": memory.summary(),
        "phases": phases,
    }
    daemon_mem = report["memory"].get("daemon_rss_mib")
    report["memory_flat"] = (daemon_mem is None or
                             daemon_mem["end"] <= daemon_mem["start"] * (1 + args.rss_growth) + 8)
    report["ok"] = (not tally.bad and alive and report["memory_flat"] and code in (None, 0)
                    and total > 0 and all(phase["ok"] for phase in phases.values()))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--seconds", type=float, default=60, help="how long (default 60)")
    parser.add_argument("--url", help="test this running daemon (loopback only) instead")
    parser.add_argument("--token", help="bearer token for --url")
    parser.add_argument("--token-file", help="file holding the bearer token for --url")
    parser.add_argument("--pid", type=int, help="the --url daemon's pid, to sample its RSS")
    parser.add_argument("--subjects", type=int, default=10,
                        help="distinct token subjects the clients share (own daemon; default 10)")
    parser.add_argument("--rpm", type=int, default=300, help="basic tier rpm per subject (default 300)")
    parser.add_argument("--burst", type=int, default=10, help="basic tier burst (default 10)")
    parser.add_argument("--slots", type=int, default=2, help="sequences decoded together (default 2)")
    parser.add_argument("--queue", type=int, default=4, help="max queued requests (default 4)")
    parser.add_argument("--max-tokens", type=int, default=8, help="default max_tokens (default 8)")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--max-requests-per-client", type=int, default=100_000)
    parser.add_argument("--rss-growth", type=float, default=0.25,
                        help="allowed RSS growth of the daemon process, start to end (default 0.25)")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--phases", default="slow,flood",
                        help="extra phases after the mixed load: slow (connections that never "
                             "finish their request), flood (one user's batches against another's "
                             "single requests); '' for none")
    parser.add_argument("--slow-clients", type=int, default=50)
    parser.add_argument("--slow-wait", type=float, default=40.0,
                        help="seconds a slow connection waits to be closed by the daemon")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--slow-timeout", type=float, default=10.0,
                        help="header_timeout and body_timeout of the daemon this script starts")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_json(Path(args.json), report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
