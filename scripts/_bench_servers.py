"""The two servers scripts/bench compares, and one streamed request to either.

Each server turns (prompt, tokens, sampling) into its own request body and parses its own
stream lines into ``{text}`` / ``{done, tokens, prompt_tokens, finish}`` / ``{error}``.

Sampling modes:

- ``greedy``: ``temperature 0, repeat_penalty 1.0`` sent to both;
- ``default``: the daemon gets no sampling field at all (its ``model_settings`` defaults apply),
  llama-server gets those same defaults explicitly (read from ``ModelSettings``, plus the
  engine's ``min_p`` and its 64-token penalty window), so both sample with the same chain
  parameters.

Slots: llama-server runs with ``-np SLOTS -kvu`` (one KV buffer of ``-c N_CTX`` shared by all
slots, each sequence may use all of it), which is the daemon's batched engine's own semantics
(``kv_unified``: ``n_ctx`` is the total, ``n_ctx_seq == n_ctx``); without ``-kvu`` llama-server
with an explicit ``-np`` gives each slot ``N_CTX / SLOTS``. The daemon gets
``LLAMAHOME_SYSTEM_SETTINGS__N_SLOTS=SLOTS`` unless ``LLAMAHOME_BENCH_DAEMON_ENV`` sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from _harness import RunningDaemon, daemon_dirs, free_port, spawn, wait_healthy

NEVER_MATCHES = "\u0000"
SAMPLING_MODES = ("greedy", "default")
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}


def default_sampling() -> dict[str, float | int]:
    """The daemon's sampling defaults, as llama-server request fields."""
    from llamahomed.core.settings import ModelSettings
    from llamahomed.service.options import DEFAULT_MIN_P

    d = ModelSettings()
    return {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p, "min_p": DEFAULT_MIN_P,
            "repeat_penalty": d.repeat_penalty, "repeat_last_n": 64}


class Server:
    name = ""

    def __init__(self, port: int) -> None:
        self.port = port
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def request(self, prompt: str, tokens: int, sampling: str = "greedy",
                ignore_eos: bool = True) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def parse(self, line: bytes) -> dict[str, Any] | None:
        """One response line -> {text} / {done, tokens, prompt_tokens, finish} / {error}; None skips it."""
        raise NotImplementedError


class LlamaServer(Server):
    name = "llama-server"

    def request(self, prompt: str, tokens: int, sampling: str = "greedy",
                ignore_eos: bool = True) -> tuple[str, dict[str, Any]]:
        params = GREEDY if sampling == "greedy" else default_sampling()
        return f"http://127.0.0.1:{self.port}/completion", {
            "prompt": prompt, "n_predict": tokens, "ignore_eos": ignore_eos, **params,
            "stream": True, "cache_prompt": False}

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
                    "finish": event.get("stop_type"), "timings": event.get("timings")}
        return {"text": event.get("content", "")}

    def tokenize(self, text: str) -> int:
        """How many tokens the model makes of ``text`` (llama-server's /tokenize)."""
        body = json.dumps({"content": text}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/tokenize", data=body,
                                         headers=self.headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return len(json.load(response)["tokens"])


class Daemon(Server):
    name = "llamahomed"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port)
        self.headers["Authorization"] = f"Bearer {token}"

    def request(self, prompt: str, tokens: int, sampling: str = "greedy",
                ignore_eos: bool = True) -> tuple[str, dict[str, Any]]:
        # The API has no ignore_eos: a sequence that ends at EOS is counted as it is ("short").
        params = GREEDY if sampling == "greedy" else {}
        return f"http://127.0.0.1:{self.port}/api/v1/stream", {
            "prompt": prompt, "max_tokens": tokens, **params, "stop": [NEVER_MATCHES]}

    def parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        event = json.loads(line)
        if "error" in event:
            return {"error": event["error"]}
        if event.get("done"):
            usage = event.get("usage") or {}
            extra = {k: v for k, v in event.items() if k not in ("done", "usage", "model", "created")}
            return {"done": True, "text": "", "tokens": usage.get("completion_tokens"),
                    "prompt_tokens": usage.get("prompt_tokens"), "finish": event.get("finish_reason"),
                    "extra": extra}
        return {"text": event.get("chunk", "")}


async def one_request(session: aiohttp.ClientSession, server: Server, prompt: str, tokens: int,
                      sampling: str = "greedy", ignore_eos: bool = True,
                      stamps: bool = False) -> dict[str, Any]:
    """One streamed request: TTFT, tokens, finish; with ``stamps`` the arrival time
    (perf_counter) of every text event."""
    url, body = server.request(prompt, tokens, sampling, ignore_eos)
    started = time.perf_counter()
    result: dict[str, Any] = {"ttft_s": None, "tokens": 0, "error": None, "sent": started}
    arrivals: list[float] = []
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
                if event.get("text"):
                    now = time.perf_counter()
                    arrivals.append(now)
                    if result["ttft_s"] is None:
                        result["ttft_s"] = now - started
                if event.get("done"):
                    result.update(tokens=event["tokens"] or 0, prompt_tokens=event["prompt_tokens"],
                                  finish=event["finish"])
                    for key in ("timings", "extra"):
                        if event.get(key):
                            result[key] = event[key]
                    break
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["total_s"] = time.perf_counter() - started
    if stamps:
        result["arrivals"] = arrivals
    return result


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800),
                                 connector=aiohttp.TCPConnector(limit=0))


def start_llama_server(bin_dir: Path, model: Path, args: argparse.Namespace, slots: int,
                       home: Path) -> tuple[subprocess.Popen[bytes], LlamaServer, list[str]]:
    port = free_port()
    cmd = [str(bin_dir / "llama-server"), "-m", str(model), "-t", str(args.threads), "-c", str(args.n_ctx),
           "-np", str(slots), "-kvu", "--host", "127.0.0.1", "--port", str(port)]
    log = home / "llama-server.log"
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
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


def start_daemon(args: argparse.Namespace, home: Path, slots: int,
                 extra: dict[str, str]) -> tuple[RunningDaemon, Daemon, dict[str, str]]:
    settings = {**daemon_dirs(home), "LLAMAHOME_LOG_LEVEL": "warning",
                "LLAMAHOME_SYSTEM_SETTINGS__N_THREADS": str(args.threads),
                "LLAMAHOME_SYSTEM_SETTINGS__N_CTX": str(args.n_ctx),
                "LLAMAHOME_SYSTEM_SETTINGS__N_SLOTS": str(slots),
                **limits_off(), **extra}
    running = spawn(home, {**os.environ, **settings}).wait_ready(timeout=180)
    return running, Daemon(running.port, running.token), settings


def daemon_config(daemon: Daemon) -> dict[str, Any]:
    """The running daemon's system settings (engine, slots, speculative, ...), for the record."""
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/api/v1/config", headers=daemon.headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response).get("system_settings", {}))
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
