"""Durations as people and Ollama's clients write them: seconds, or ``"5m"``, ``"1h30m"``, ``"-1"``.

A number is seconds. A string is a number of seconds, or Go-style units (``ns``, ``us``/``µs``,
``ms``, ``s``, ``m``, ``h``) summed, with an optional sign in front (``"-1m"``). Used for
``keep_alive``, where a negative value means "forever" and 0 means "unload when idle".
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
MAX_SECONDS = 100 * 365 * 86400.0  # a century: longer is "forever" written as a number


def parse_duration(value: float | int | str) -> float:
    """Seconds for ``value``; ValueError with a readable message when it is not a duration."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("a duration is a number of seconds or a string such as '5m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
        try:
            seconds = sign * float(body)
        except ValueError:
            seconds = sign * _units(body, value)
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite (a negative one means forever)")
    return -1.0 if seconds < 0 else min(seconds, MAX_SECONDS)  # every negative is "forever"


def _units(body: str, original: str) -> float:
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(body):
        raise ValueError(f"{original!r} is not a duration: use seconds or units such as "
                         "'30s', '5m', '1h30m' (a negative value keeps the model loaded)")
    return total
