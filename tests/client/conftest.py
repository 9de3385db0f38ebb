"""Fixtures for the client tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL_ID


@pytest.fixture
def engine_env(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment a user of the daemon would have: its models dir and default model."""
    monkeypatch.setenv("LLAMAHOME_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("LLAMAHOME_INSTALL_DEFAULT_MODEL", "false")
    monkeypatch.setenv("LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL", TINY_MODEL_ID)
    return models_dir
