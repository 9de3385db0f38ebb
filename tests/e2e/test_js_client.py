"""The JavaScript client's test suite (``node --test client/js/test/``) against the real daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_MODEL_FILE, load_script
from tests.e2e.test_daemon import Daemon, free_port

pytestmark = pytest.mark.e2e
NODE = shutil.which("node")


@pytest.fixture
def tiny_daemon(tmp_path: Path, tiny_model_file: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    store = tmp_path / "store"
    store.mkdir()
    os.link(tiny_model_file, store / TINY_MODEL_FILE)
    load_script("make_tiny_gguf").write_tiny_llama(store / "tiny-long.gguf", n_ctx=4096,
                                                   name="tiny-long")
    monkeypatch.setenv("LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL", "tiny-llama")
    monkeypatch.setenv("LLAMAHOME_INSTALL_DEFAULT_MODEL", "false")
    daemon = Daemon(store, free_port())
    daemon.wait_ready()
    yield daemon
    daemon.stop()


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_js_client_passes_its_tests_against_the_real_daemon(
        tiny_daemon: Daemon, isolated_env: Path) -> None:
    assert NODE is not None
    token = (isolated_env / "state" / "admin.token").read_text().strip()
    env = {**os.environ, "LLAMAHOME_TEST_URL": f"http://127.0.0.1:{tiny_daemon.port}",
           "LLAMAHOME_TEST_TOKEN": token}
    result = subprocess.run([NODE, "--test", "client/js/test/"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.M)}
    assert counts["fail"] == 0 and counts["skipped"] == 0 and counts["cancelled"] == 0, output
    assert counts["pass"] >= 14, output  # unit tests + every daemon test ran
