"""The spare worker through a real ``llamahomed start``: started before the first request,
taken by its load, replaced; SIGKILL of the spare is harmless; nothing is left after stop."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import TINY_MODEL_FILE
from tests.fixtures.daemon import RunningDaemon, dirs_env, spawn


def _call(daemon: RunningDaemon, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(daemon.url + path, data, headers={
        **daemon.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _wait(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _family(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def test_the_first_load_uses_the_spare_and_stop_leaves_no_process(
        tmp_path: Path, tiny_model_file: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    os.link(tiny_model_file, store / TINY_MODEL_FILE)
    daemon = spawn(tmp_path / "d", dirs_env(tmp_path / "d", store, "tiny-llama"))
    try:
        daemon.wait_ready()
        spare = _wait(lambda: _call(daemon, "/api/v1/status")["spare_worker"]["pid"])
        assert _call(daemon, "/api/v1/status")["models"] == []  # not a loaded model
        asked = time.time()
        done = _call(daemon, "/api/v1/process", {"prompt": "hello", "max_tokens": 3})
        assert done["text"] is not None
        status = _call(daemon, "/api/v1/status")
        model = status["models"][0]
        assert model["pid"] == spare and model["from_spare"] is True
        assert psutil.Process(spare).create_time() < asked
        fresh = _wait(lambda: _call(daemon, "/api/v1/status")["spare_worker"]["pid"])
        assert fresh != spare
        os.kill(fresh, signal.SIGKILL)  # harmless: forgotten, replaced
        _wait(lambda: _call(daemon, "/api/v1/status")["spare_worker"]["pid"] not in (None, fresh))
        assert _call(daemon, "/api/v1/process", {"prompt": "again", "max_tokens": 3})["text"] \
            is not None
        family = _family(daemon.proc.pid)
        assert spare in family and len(family) >= 2  # the model's worker and the new spare
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()[-3000:]
    assert "Traceback" not in daemon.output()
    left = [pid for pid in family if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == []
