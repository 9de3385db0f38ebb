"""The JavaScript client's test suite (``node --test client/js/test/``) against the real daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.fixtures.daemon import RunningDaemon

pytestmark = pytest.mark.e2e
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_js_client_passes_its_tests_against_the_real_daemon(
        tiny_daemon: RunningDaemon) -> None:
    assert NODE is not None
    env = {**os.environ, "LLAMAHOME_TEST_URL": tiny_daemon.url,
           "LLAMAHOME_TEST_TOKEN": tiny_daemon.token}
    result = subprocess.run([NODE, "--test", "client/js/test/"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.M)}
    assert counts["fail"] == 0 and counts["skipped"] == 0 and counts["cancelled"] == 0, output
    assert counts["pass"] >= 14, output  # unit tests + every daemon test ran
