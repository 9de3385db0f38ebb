"""Progress lines on stderr for long CLI commands; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from llamahomed.core.settings import format_size

_SPINNER = "|/-\\"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLine:
    """One self-rewriting status line, redrawn at most ``interval`` seconds apart."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._width = 0
        self._ticks = 0

    def bytes(self, label: str, done: int, total: int | None, *, since: int = 0,
              force: bool = False) -> None:
        """``label [#####-----]  45%  1.2GB/2.7GB  12MB/s  ETA 2m03s`` (rate counts new bytes)."""
        if not self._due(force):
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = max(done - since, 0) / elapsed
        if total:
            fraction = min(done / total, 1.0)
            bar = "#" * int(fraction * 24)
            eta = f"ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
            text = (f"{label} [{bar:<24}] {fraction * 100:5.1f}%  {format_size(done)}/"
                    f"{format_size(total)}  {format_size(int(rate))}/s  {eta}")
        else:
            text = f"{label} {format_size(done)}  {format_size(int(rate))}/s"
        self._draw(text)

    def steps(self, label: str, done: int, total: int | None, elapsed: float) -> None:
        """``label | 12/21 tensors  3s`` with a spinner that turns on every redraw."""
        if not self._due(False):
            return
        self._ticks += 1
        count = f"{done}/{total} tensors" if total else "starting"
        self._draw(f"{label} {_SPINNER[self._ticks % len(_SPINNER)]} {count}  {_duration(elapsed)}")

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def _due(self, force: bool) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        return True

    def _draw(self, text: str) -> None:
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
