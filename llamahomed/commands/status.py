"""``llamahomed status [--json]``: loaded models, their plan, slots, queue, memory, uptime."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from llamahomed.commands.runtime import daemon_status, running_daemon
from llamahomed.core.settings import Settings, format_size

NOT_RUNNING = 3  # the LSB status code for "program is not running"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("status", help="is the daemon running, and what has it loaded",
                            parents=[common])
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    runtime = running_daemon(settings)
    if runtime is None:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print("llamahomed is not running")
        return NOT_RUNNING
    url, status = daemon_status(settings, runtime)
    if args.json:
        print(json.dumps({"running": True, "url": url, **status}, indent=2))
    else:
        render(status, url)
    return 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours
            else f"{minutes}m {secs}s" if minutes else f"{secs}s")


def render(status: dict[str, Any], url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    memory = status["memory"]
    console.print(f"[bold]llamahomed {status['version']}[/] running at {url}, pid {status['pid']}, "
                  f"up {_duration(status['uptime_s'])}; memory: daemon "
                  f"{format_size(memory['daemon_rss_bytes'])}, workers "
                  f"{format_size(memory['workers_rss_bytes'])}, system available "
                  f"{format_size(memory['system_available_bytes'] or 0)} of "
                  f"{format_size(memory['system_total_bytes'] or 0)}")
    if not status["models"]:
        console.print("no models loaded (a model loads on its first request)")
    else:
        table = Table(title="loaded models", title_justify="left")
        for column in ("model", "plan", "slots in use", "queued", "KV cache", "memory / held",
                       "idle", "unloads"):
            table.add_column(column, justify="left" if column in ("model", "plan") else "right")
        for model in status["models"]:
            plan = model["plan"]
            table.add_row(
                model["id"],
                f"{plan['engine']}, ctx {plan['n_ctx']}, gpu layers "
                f"{'all' if plan['n_gpu_layers'] < 0 else plan['n_gpu_layers']}, "
                f"{plan['n_threads']} threads",
                f"{model['slots_in_use']}/{model['slots']}", str(model["queued"]),
                f"{model['kv_cache_usage'] * 100:.0f}%", _memory(model),
                _duration(model["idle_s"]), _unloads(model))
        console.print(table)
        for model in status["models"]:
            if model.get("devices"):
                spread = ", ".join(f"{d['device']} ({d['layers']} layers)" for d in model["devices"])
                console.print(f"{model['id']} across: CPU (the rest), {spread}")
    scheduler = status.get("scheduler") or {}
    for loading in scheduler.get("loading", []):
        console.print(f"loading {loading['model']} (since {loading['since']})")
    for waiter in scheduler.get("waiting", []):
        console.print(f"waiting to load {waiter['model']} for {_duration(waiter['waited_s'])}: "
                      f"{_why_waiting(waiter)}")
    for gpu in status.get("gpus", []):
        console.print(f"GPU {gpu['index']} {gpu['name']}: {format_size(gpu['memory_used_bytes'])} "
                      f"of {format_size(gpu['memory_total_bytes'])}, "
                      f"{gpu['utilization_percent']:.0f}% busy")


def _memory(model: dict[str, Any]) -> str:
    """Resident memory / what the scheduler counts the model as holding (RAM + VRAM)."""
    held = (model.get("memory_held") or {}).get("total_bytes")
    rss = format_size(model["rss_bytes"])
    return f"{rss} / {format_size(held)}" if held else rss


def _unloads(model: dict[str, Any]) -> str:
    """When an idle model unloads: "in 4m 12s", "when evicted" (negative keep-alive), or
    "running" (its keep-alive starts when its requests end)."""
    if model.get("state") == "running":
        return "running"
    if (model.get("keep_alive_s") or 0) < 0:
        return "when evicted"
    expires = model.get("expires_at")
    if not expires:
        return "-"
    when = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    return f"in {_duration(max(0.0, when - time.time()))}"


def _why_waiting(waiter: dict[str, Any]) -> str:
    holders = ", ".join(waiter["waiting_for"]) or "?"
    if waiter["reason"] == "max_loaded_models":
        return f"max_loaded_models reached by busy models ({holders})"
    return f"busy models hold the memory it needs ({holders})"
