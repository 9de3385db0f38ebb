"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL_FILE
from tests.fixtures.daemon import RunningDaemon, start_daemon
from tests.fixtures.tiny_gguf import write_tiny_llama


@pytest.fixture
def tiny_daemon(tmp_path: Path, tiny_model_file: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningDaemon]:
    """A real ``llamahomed start`` with the tiny model (the default) and ``tiny-long``, a tiny
    model with a 4096-token context for long generations."""
    store = tmp_path / "store"
    store.mkdir()
    os.link(tiny_model_file, store / TINY_MODEL_FILE)
    write_tiny_llama(store / "tiny-long.gguf", n_ctx=4096,
                     name="tiny-long")
    monkeypatch.setenv("LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL", "tiny-llama")
    monkeypatch.setenv("LLAMAHOME_INSTALL_DEFAULT_MODEL", "false")
    # check=False: the tests that need a clean exit assert it themselves (test_ws_daemon.py);
    # the JS client suite's daemon logs a traceback that it never asserted on.
    with start_daemon(tmp_path / "daemon", args=["--models-dir", str(store)],
                      check=False) as daemon:
        yield daemon
