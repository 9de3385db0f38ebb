"""A real ``llamahomed start`` for the hardening tests: own dirs, extra settings, raw sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.fixtures.daemon import dirs_env


class Live:
    """``llamahomed start --port 0`` with everything under ``root`` (``env`` on top)."""

    def __init__(self, root: Path, models_dir: Path, env: dict[str, str] | None = None,
                 args: Sequence[str] = ("--port", "0"), umask: int | None = None,
                 wait: bool = True) -> None:
        root.mkdir(parents=True, exist_ok=True)
        base = dirs_env(root, models_dir, "tiny-llama")
        self.state_dir = Path(base["LLAMAHOME_STATE_DIR"])
        self.env = {**base, "LLAMAHOME_LOG_FORMAT": "json", **(env or {})}
        self.log_path = root / f"daemon-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        preexec: Callable[[], object] | None = (lambda: os.umask(umask)) if umask is not None else None
        self.proc = subprocess.Popen([sys.executable, "-m", "llamahomed", "start", *args],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec)  # noqa: PLW1509 - only sets the umask
        self.host = "127.0.0.1"
        self.port = self._wait_ready() if wait else 0

    def _wait_ready(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        runtime = self.state_dir / "daemon.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early: {self.output()}")
            try:
                data = json.loads(runtime.read_text())
                if data["pid"] == self.proc.pid:
                    self.host = str(data["host"]).strip("[]")
                    with socket.create_connection((self.host, int(data["port"])), timeout=0.2):
                        return int(data["port"])
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon did not start listening: {self.output()}")

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llamahomed", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()


def read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the daemon sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def seconds_until_closed(sock: socket.socket, limit: float) -> float:
    """How long the daemon keeps this connection open (``limit`` when it did not close it)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return limit
