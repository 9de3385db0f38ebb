"""Durations as Ollama's clients and people write them (keep_alive)."""

from __future__ import annotations

import pytest

from llamahomed.core.duration import MAX_SECONDS, parse_duration


@pytest.mark.parametrize(("value", "seconds"), [
    (300, 300.0), (2.5, 2.5), ("300", 300.0), ("5m", 300.0), ("1h30m", 5400.0),
    ("1.5h", 5400.0), ("300ms", 0.3), (" 10s ", 10.0), ("0", 0.0), ("0s", 0.0),
    ("-1", -1.0), ("-5m", -1.0), (-3600, -1.0), (10**12, MAX_SECONDS),
])
def test_numbers_are_seconds_strings_may_have_units_and_every_negative_means_forever(
        value: float | str, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "m", "", "1m5", "nan", "inf", True])
def test_anything_else_is_a_readable_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)  # type: ignore[arg-type]
