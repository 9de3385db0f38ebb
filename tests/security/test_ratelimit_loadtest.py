"""scripts/loadtest.py, briefly: the real daemon under concurrent clients answers 2xx or 429/503
with Retry-After, stays up, and its memory stays flat (the full run is 50 clients for 60 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SCRIPTS

pytestmark = pytest.mark.e2e


def test_a_short_load_run_sees_only_2xx_429_and_503(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "loadtest.py"), "--clients", "12", "--seconds", "4",
         "--subjects", "3", "--rpm", "120", "--burst", "4", "--json", str(report_file),
         "--phases", "flood,slow", "--flood-seconds", "3", "--slow-clients", "20",
         "--slow-timeout", "2", "--slow-wait", "15"],
        capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["ok"] and report["bad_answers"] == 0 and report["daemon_alive_at_end"]
    by_status = report["by_status"]
    assert set(by_status) <= {"200", "429", "503"}
    assert int(by_status["200"]) > 0 and int(by_status["429"]) > 0  # the limit really bit
    assert report["memory"]["samples"] >= 2
    flood = report["phases"]["batch_flood"]  # one user's batches did not lock the other out
    assert flood["ok"] and int(flood["light_statuses"]["200"]) > 0
    assert "503" not in flood["light_statuses"]
    slow = report["phases"]["slow_clients"]  # connections that never finish are closed
    assert slow["ok"] and slow["closed_by_daemon"] + slow["refused_at_connect"] == 20
    assert slow["ordinary_request_meanwhile"]["status"] == 200
