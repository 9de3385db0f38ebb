"""Decode speed measured from real runs, per model file (the planner's speed hints)."""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from llamahomed.core.files import atomic_write
from llamahomed.engine.protocol import Done
from llamahomed.registry.store import ModelEntry

log = structlog.get_logger(__name__)


class Performance:
    """Decode speed measured from real runs, per model file; persisted in the state dir."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._speeds: dict[str, float] = {}
        try:
            self._speeds = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            self._speeds = {}

    def tokens_per_second(self, entry: ModelEntry) -> float | None:
        return self._speeds.get(entry.path.name)

    def record(self, entry: ModelEntry, done: Done) -> None:
        generated = done.usage.get("completion_tokens", 0)
        decode_ms = float(done.timings.get("decode_ms", 0.0))
        if generated < 4 or decode_ms <= 0:
            return  # too short to say anything about speed
        speed = (generated - 1) / (decode_ms / 1000.0)
        old = self._speeds.get(entry.path.name)
        self._speeds[entry.path.name] = round(speed if old is None else 0.7 * old + 0.3 * speed, 2)

    def save(self) -> None:
        try:
            atomic_write(self._path, json.dumps(self._speeds, indent=1).encode(), mode=0o644)
        except OSError as exc:
            log.warning("performance_save_failed", error=str(exc))
