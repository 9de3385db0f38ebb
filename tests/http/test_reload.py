"""SIGHUP's reload on the real app: live settings apply, restart-only ones are kept and named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from llamahomed.http.keys import CONFIG, MONITORING
from llamahomed.daemon import reload_config
from llamahomed.core.notify import Notifier


@pytest.fixture
def settings(make_settings: Callable[..., Any], tmp_path: Path) -> Any:
    return make_settings(config_file=tmp_path / "config.toml", port=18910)


async def test_reload_applies_live_settings_and_keeps_restart_ones(
        api: Any, auth: dict[str, str], settings: Any) -> None:
    app = api.server.app
    settings.config_file.write_text(
        "port = 1234\ntracing = true\n[model_settings]\nmax_tokens = 3\ntemperature = 0.0\n"
        "default_model = 'tiny-llama'\n")
    with structlog.testing.capture_logs() as logs:
        assert reload_config(app, Notifier(None)) is True
    current = app[CONFIG].settings
    assert current.port == 18910  # bound at start: kept
    assert current.tracing is True and app[MONITORING].metrics.enable_tracing is True
    warning = next(e for e in logs if e["event"] == "reload_needs_restart")
    assert warning["settings"] == ["port"]
    reloaded = next(e for e in logs if e["event"] == "reloaded")
    assert {"model_settings", "tracing"} <= set(reloaded["changed"])
    body = await (await api.post("/api/v1/process", headers=auth, json={"prompt": "hi"})).json()
    assert body["usage"]["completion_tokens"] == 3 and "trace" in body


async def test_a_broken_file_keeps_the_old_settings(api: Any, settings: Any) -> None:
    app = api.server.app
    before = app[CONFIG].settings
    settings.config_file.write_text("[model_settings\n")
    with structlog.testing.capture_logs() as logs:
        assert reload_config(app, Notifier(None)) is False
    assert app[CONFIG].settings is before
    assert any(e["event"] == "reload_failed" and "cannot read config file" in e["error"]
               for e in logs)
