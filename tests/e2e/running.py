"""A real ``llamahomed start`` process with its own state dir, for tests that drive it from outside.

``client_env()`` is what a client process needs to find it: ``LLAMAHOME_ENDPOINT`` (and its alias
``LLAMAHOME_URL``), ``LLAMAHOME_API_KEY`` (the daemon's admin token) and ``LLAMAHOME_STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunningDaemon:
    def __init__(self, root: Path, models_dir: Path, default_model: str) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAHOME_")}
        self.env.update({
            "LLAMAHOME_STATE_DIR": str(self.state_dir),
            "LLAMAHOME_DATA_DIR": str(root / "data"),
            "LLAMAHOME_CONFIG_FILE": str(root / "config.toml"),
            "LLAMAHOME_MODELS_DIR": str(models_dir),
            "LLAMAHOME_INSTALL_DEFAULT_MODEL": "false",
            "LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL": default_model,
        })
        self.log = (root / "daemon.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "llamahomed", "start", "--port", "0"],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = self._wait_ready()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token = (self.state_dir / "admin.token").read_text().strip()

    def _wait_ready(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        runtime = self.state_dir / "daemon.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early: {self.output()}")
            try:
                port = int(json.loads(runtime.read_text())["port"])
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return port
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise AssertionError(f"daemon did not start listening: {self.output()}")

    def client_env(self) -> dict[str, str]:
        return {"LLAMAHOME_ENDPOINT": self.endpoint, "LLAMAHOME_URL": self.endpoint,
                "LLAMAHOME_API_KEY": self.token, "LLAMAHOME_STATE_DIR": str(self.state_dir)}

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.root / "daemon.log").read_text()[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()


@contextmanager
def running_daemon(root: Path, models_dir: Path, default_model: str) -> Iterator[RunningDaemon]:
    """Start the daemon; stop it (SIGTERM) and check it exited cleanly at the end."""
    root.mkdir(parents=True, exist_ok=True)
    daemon = RunningDaemon(root, models_dir, default_model)
    try:
        yield daemon
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "Traceback" not in daemon.output()
