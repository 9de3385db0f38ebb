"""The machine side of scripts/bench: what the CPU is, how idle it is, whose ticks are whose,
the servers' peak resident memory, and the checkout's commit."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from _harness import ROOT


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
