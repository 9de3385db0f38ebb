"""``llamahomed status [--json]``: loaded models, their plan, slots, queue, memory, uptime."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from typing import Any

from llamahomed.commands.runtime import admin_token, base_url, get_json, running_daemon
from llamahomed.core.errors import StartupError
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
    url = base_url(runtime)
    try:
        status = get_json(f"{url}/api/v1/status", admin_token(settings))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StartupError(f"llamahomed (pid {runtime['pid']}) does not answer at {url}: {exc}") from exc
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
        for column in ("model", "plan", "slots in use", "queued", "KV cache", "memory", "idle"):
            table.add_column(column, justify="left" if column in ("model", "plan") else "right")
        for model in status["models"]:
            plan = model["plan"]
            table.add_row(
                model["id"],
                f"{plan['engine']}, ctx {plan['n_ctx']}, gpu layers "
                f"{'all' if plan['n_gpu_layers'] < 0 else plan['n_gpu_layers']}, "
                f"{plan['n_threads']} threads",
                f"{model['slots_in_use']}/{model['slots']}", str(model["queued"]),
                f"{model['kv_cache_usage'] * 100:.0f}%", format_size(model["rss_bytes"]),
                _duration(model["idle_s"]))
        console.print(table)
        for model in status["models"]:
            if model.get("devices"):
                spread = ", ".join(f"{d['device']} ({d['layers']} layers)" for d in model["devices"])
                console.print(f"{model['id']} across: CPU (the rest), {spread}")
    for gpu in status.get("gpus", []):
        console.print(f"GPU {gpu['index']} {gpu['name']}: {format_size(gpu['memory_used_bytes'])} "
                      f"of {format_size(gpu['memory_total_bytes'])}, "
                      f"{gpu['utilization_percent']:.0f}% busy")
