"""A real ``llamahomed start`` process with its own state dir, for tests that drive it from outside.

Two layouts: ``dirs_env`` points every directory at the test's folders through ``LLAMAHOME_*``
variables; ``home_env`` gives the daemon a home directory of its own and no ``LLAMAHOME_*``
variables at all, so it (and any ``llamahomed`` command or client run with the same env) uses the
default places a user has (``~/.local/state/llamahome/admin.token``, ``~/.config/llamahome/...``).
``client_env()`` is what a client process needs on top: ``LLAMAHOME_ENDPOINT`` (and its alias
``LLAMAHOME_URL``) and ``LLAMAHOME_API_KEY`` (the daemon's admin token).
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


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LLAMAHOME_", "XDG_"))}


def dirs_env(root: Path, models_dir: Path, default_model: str) -> tuple[dict[str, str], Path]:
    """An environment whose ``LLAMAHOME_*`` variables put everything under ``root``."""
    env = _clean_environ()
    env.update({
        "LLAMAHOME_STATE_DIR": str(root / "state"),
        "LLAMAHOME_DATA_DIR": str(root / "data"),
        "LLAMAHOME_CONFIG_FILE": str(root / "config.toml"),
        "LLAMAHOME_MODELS_DIR": str(models_dir),
        "LLAMAHOME_INSTALL_DEFAULT_MODEL": "false",
        "LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL": default_model,
        # Tests fire requests faster than a person: not what the rate limiter is for.
        "LLAMAHOME_SYSTEM_SETTINGS__MAX_REQUESTS_PER_MINUTE": "1000000",
    })
    return env, root / "state"


def home_env(home: Path) -> tuple[dict[str, str], Path]:
    """An environment with ``HOME=home`` and the platform's default LlamaHome directories."""
    env = _clean_environ()
    env["HOME"] = str(home)
    return env, home / ".local" / "state" / "llamahome"


class RunningDaemon:
    def __init__(self, root: Path, env: dict[str, str], state_dir: Path) -> None:
        self.root = root
        self.state_dir = state_dir
        self.env = env
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
def running_daemon(root: Path, env: dict[str, str], state_dir: Path) -> Iterator[RunningDaemon]:
    """Start the daemon; stop it (SIGTERM) and check it exited cleanly at the end."""
    root.mkdir(parents=True, exist_ok=True)
    daemon = RunningDaemon(root, env, state_dir)
    try:
        yield daemon
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "Traceback" not in daemon.output()
