"""What llama.cpp really allocated at a load, and a store of those measurements.

"Allocation" here means the buffers llama.cpp allocates and reports while it loads: model
weights (``CPU_Mapped``/``CPU_REPACK``/``CUDA0`` model buffers), KV cache, output and compute
buffers, per device. The worker captures llama.cpp's log lines while loading
(:func:`capture_buffers`), and the daemon stores the sums keyed by model file and load settings;
the next plan for the same key uses the measurement instead of the estimate.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from llamahomed.core.files import atomic_write

log = structlog.get_logger(__name__)

_BUFFER = re.compile(r"(\S+)\s+(model|KV|output|compute)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


def parse_buffers(lines: list[str]) -> dict[str, dict[str, int]]:
    """``{"CPU": {"model": bytes, "KV": ..., ...}, "CUDA0": {...}}`` from llama.cpp's log."""
    devices: dict[str, dict[str, int]] = {}
    for line in lines:
        for dev, kind, mib in _BUFFER.findall(line):
            # host buffers (CPU_Mapped, CPU_REPACK, CUDA_Host, ...) are RAM; Metal_Mapped is Metal
            device = "CPU" if dev.startswith("CPU") or dev.endswith("_Host") else dev.split("_")[0]
            parts = devices.setdefault(device, {})
            parts[kind] = parts.get(kind, 0) + int(float(mib) * 2**20)
    return devices


@contextlib.contextmanager
def capture_buffers() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines about buffers while the block runs (one load at a time).

    llama-cpp-python's own log callback still gets every line, so ``verbose`` keeps working.
    """
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []
    pending: list[str] = []
    lock = threading.Lock()

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        piece = text.decode("utf-8", errors="replace")
        with lock:
            pending.append(piece)
            if piece.endswith("\n"):
                line = "".join(pending)
                pending.clear()
                if "buffer size" in line:
                    lines.append(line)
        _logger.llama_log_callback(level, text, user_data)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


class Measurements:
    """Allocations seen at real loads, in ``<state_dir>/allocations.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, Any]] = {}
        try:
            raw = json.loads(path.read_text())
            if isinstance(raw, dict):
                self._data = {k: v for k, v in raw.items() if isinstance(v, dict)}
        except (OSError, ValueError):
            self._data = {}

    @staticmethod
    def key(file_name: str, file_size: int, settings_key: str) -> str:
        return f"{file_name}|{file_size}|{settings_key}"

    def get(self, key: str) -> dict[str, dict[str, int]] | None:
        entry = self._data.get(key)
        buffers = entry.get("buffers") if entry else None
        return buffers if isinstance(buffers, dict) else None

    def record(self, key: str, buffers: dict[str, dict[str, int]]) -> None:
        if not buffers or self.get(key) == buffers:
            return
        self._data[key] = {"buffers": buffers}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self._data, indent=1, sort_keys=True).encode(),
                         mode=0o644)
        except OSError as exc:
            log.warning("allocations_save_failed", error=str(exc))
