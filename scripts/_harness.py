"""What the benchmark and check scripts share: the daemon launcher, free ports, the tiny model
generator, an engine event collector, percentiles and JSON results.

Scripts run as ``.venv/bin/python scripts/X.py``, so ``scripts/`` is on ``sys.path`` and they
``import _harness``. The daemon launcher and the tiny GGUF generator have one implementation
each, in ``tests/fixtures/`` (standard library and ``gguf`` only, no pytest); this module is the
one place where scripts reach into it (it puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.daemon import (  # noqa: E402
    DaemonError,
    RunningDaemon,
    free_port,
    spawn,
    start_daemon,
    wait_healthy,
)
from tests.fixtures.tiny_gguf import write_tiny_llama  # noqa: E402

__all__ = ["ROOT", "Collector", "DaemonError", "RunningDaemon", "daemon_dirs", "free_port",
           "percentile", "spawn", "start_daemon", "stop_process", "tail", "wait_healthy",
           "write_json", "write_tiny_llama"]


def daemon_dirs(home: Path) -> dict[str, str]:
    """``LLAMAHOME_*`` variables that keep a daemon's state, data and config under ``home``."""
    return {"LLAMAHOME_STATE_DIR": str(home / "state"), "LLAMAHOME_DATA_DIR": str(home / "data"),
            "LLAMAHOME_CONFIG_FILE": str(home / "config.toml")}


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    """SIGTERM, then kill after ``timeout`` s (a server that is not our daemon: llama-server)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 <= q < 1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def write_json(path: Path, data: Any) -> None:
    """Write a result file (indented, newline-terminated), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


class Collector:
    """An in-process engine's ``emit``: finished sequences (``done``/``error`` events by seq id)
    and the sequences that produced text."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.done: dict[int, dict[str, Any]] = {}
        self.first: set[int] = set()

    def __call__(self, events: list[dict[str, Any]]) -> None:
        with self.cond:
            for event in events:
                if event["kind"] == "text":
                    self.first.add(event["seq"])
                if event["kind"] in ("done", "error"):
                    self.done[event["seq"]] = event
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 600) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"not done after {timeout} s")

    def wait_done(self, seq_ids: Sequence[int], timeout: float = 600) -> None:
        self.wait(lambda: all(s in self.done for s in seq_ids), timeout)
