"""``llamahomed ps``: the models the running daemon has loaded, their memory, and until when."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

from llamahomed.commands.runtime import daemon_status, running_daemon
from llamahomed.commands.status import NOT_RUNNING
from llamahomed.core.settings import Settings, format_size


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("ps", help="loaded models, their memory and until when",
                            parents=[common])
    parser.add_argument("--json", action="store_true", help="print the models as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    runtime = running_daemon(settings)
    if runtime is None:
        print("llamahomed is not running")
        return NOT_RUNNING
    url, status = daemon_status(settings, runtime)
    models: list[dict[str, Any]] = status["models"]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    rows = [("NAME", "FILE", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")]
    rows += [(m["id"], m["path"].rsplit("/", 1)[-1], format_size(m["rss_bytes"]),
              processor(m["plan"]), str(m["plan"]["n_ctx"]), until(m)) for m in models]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def processor(plan: dict[str, Any]) -> str:
    layers = plan["n_gpu_layers"]
    return "100% GPU" if layers < 0 else "100% CPU" if layers == 0 else f"{layers} layers on GPU"


def until(model: dict[str, Any]) -> str:
    """When the model unloads: running, never, in N minutes (from ``expires_at``)."""
    if model.get("slots_in_use") or model.get("queued"):
        return "running"
    expires = model.get("expires_at")
    if "expires_at" in model and expires is None:
        return "forever"
    if isinstance(expires, str):
        moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        left = moment.timestamp() - time.time()
        return "now" if left <= 0 else f"in {_minutes(left)}"
    return f"idle {_minutes(float(model.get('idle_s', 0.0)))}"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    return f"{seconds / 3600:.1f} h"

