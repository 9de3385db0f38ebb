"""The real ``llamahomed`` process: readiness notification, drain on SIGTERM, SIGHUP reload,
startup failures, ``start --detach`` / ``status`` / ``stop``."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY_MODEL_ID
from tests.fixtures.daemon import free_port, llamahomed, spawn

pytestmark = pytest.mark.e2e


def write_config(path: Path, **model_settings: Any) -> Path:
    values = {"default_model": TINY_MODEL_ID, **model_settings}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    path.write_text(f"install_default_model = false\n\n[model_settings]\n{body}\n")
    return path


class Process:
    """``llamahomed start`` with our own environment and config file, on a port known at once."""

    def __init__(self, models_dir: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.daemon = spawn(config.parent / "daemon", {**os.environ, **(env or {})},
                            args=["--models-dir", str(models_dir), "--config", str(config)],
                            port=free_port())
        self.proc, self.port, self.url = self.daemon.proc, self.daemon.port, self.daemon.url

    def wait_listening(self, timeout: float = 60) -> None:
        self.daemon.wait_ready(timeout)

    def request(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return urllib.request.urlopen(req, timeout=120)  # noqa: S310

    def finish(self) -> tuple[int, str]:
        """SIGTERM (unless it already exited), wait for the drain; exit code and output."""
        return self.daemon.stop(timeout=90), self.daemon.output()


def admin_token(home: Path) -> str:
    return (home / "state" / "admin.token").read_text().strip()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    yield sock, path
    sock.close()


def messages(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_the_daemon_notifies_ready_reloading_and_stopping(
        models_dir: Path, tmp_path: Path, isolated_env: Path,
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    config = write_config(tmp_path / "config.toml", max_tokens=100)
    daemon = Process(models_dir, config, env={"NOTIFY_SOCKET": path})
    try:
        ready = messages(sock)
        assert ready["READY"] == "1" and int(ready["MAINPID"]) == daemon.proc.pid
        assert f":{daemon.port}" in ready["STATUS"]
        # listening before READY=1 was sent
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=1):
            pass
        # SIGHUP: the new file applies to the next request
        write_config(config, max_tokens=7)
        daemon.proc.send_signal(signal.SIGHUP)
        assert messages(sock)["RELOADING"] == "1"
        assert messages(sock)["READY"] == "1"
        token = admin_token(isolated_env)
        settings = json.loads(daemon.request("GET", "/api/v1/config", token).read())
        assert settings["model_settings"]["max_tokens"] == 7
        result = json.loads(daemon.request("POST", "/api/v1/process", token,
                                           {"prompt": "hi", "temperature": 0}).read())
        assert result["usage"]["completion_tokens"] == 7
        # a broken file on SIGHUP keeps the old settings and the daemon
        config.write_text("[model_settings\n")
        daemon.proc.send_signal(signal.SIGHUP)
        assert messages(sock)["RELOADING"] == "1"
        assert "reload failed" in messages(sock)["STATUS"]
        assert daemon.proc.poll() is None
        daemon.proc.send_signal(signal.SIGTERM)
        assert messages(sock)["STOPPING"] == "1"
    finally:
        code, err = daemon.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert '"event": "reload_failed"' in err and '"event": "reloaded"' in err


def test_an_abstract_notify_socket_works_too(models_dir: Path, tmp_path: Path) -> None:
    name = f"llamahome-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(60)
    daemon = Process(models_dir, write_config(tmp_path / "c.toml"), env={"NOTIFY_SOCKET": "@" + name})
    try:
        assert messages(sock)["READY"] == "1"
        daemon.proc.send_signal(signal.SIGINT)
        assert messages(sock)["STOPPING"] == "1"
        assert daemon.finish()[0] == 0
    finally:
        daemon.finish()
        sock.close()


def stream_lines(daemon: Process, token: str, body: dict[str, Any],
                 after_first: Any) -> list[dict[str, Any]]:
    """Read a stream line by line; call ``after_first()`` once the first chunk arrived."""
    lines = []
    with daemon.request("POST", "/api/v1/stream", token, body) as response:
        for raw in response:
            lines.append(json.loads(raw))
            if len(lines) == 1:
                after_first()
    return lines


@pytest.mark.gemma
def test_sigterm_lets_a_short_stream_finish(gemma_file: Path, tmp_path: Path,
                                            isolated_env: Path) -> None:
    store = tmp_path / "g"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    config = write_config(tmp_path / "c.toml", default_model="gemma3-270m")
    daemon = Process(store, config, env={"LLAMAHOME_DRAIN_TIMEOUT": "120"})
    daemon.wait_listening()
    lines = stream_lines(daemon, admin_token(isolated_env),
                         {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0},
                         lambda: daemon.proc.send_signal(signal.SIGTERM))
    code, err = daemon.finish()
    assert lines[-1]["done"] is True and lines[-1]["usage"]["completion_tokens"] == 24
    assert code == 0 and "Traceback" not in err
    assert '"event": "drained"' in err


@pytest.mark.gemma
def test_sigterm_ends_a_long_stream_with_a_final_error_line_after_the_drain_timeout(
        gemma_file: Path, tmp_path: Path, isolated_env: Path) -> None:
    store = tmp_path / "g"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    config = write_config(tmp_path / "c.toml", default_model="gemma3-270m")
    daemon = Process(store, config, env={"LLAMAHOME_DRAIN_TIMEOUT": "3"})
    daemon.wait_listening()
    signalled: list[float] = []
    refused: list[float] = []
    token = admin_token(isolated_env)
    worker_pids: list[int] = []

    def terminate() -> None:
        status = json.loads(daemon.request("GET", "/api/v1/status", token).read())
        worker_pids.extend(model["pid"] for model in status["models"])
        signalled.append(time.monotonic())
        daemon.proc.send_signal(signal.SIGTERM)
        while time.monotonic() - signalled[0] < 2:  # the listener closes at once
            try:
                socket.create_connection(("127.0.0.1", daemon.port), timeout=0.5).close()
            except ConnectionRefusedError:
                refused.append(time.monotonic())
                return
            time.sleep(0.02)

    lines = stream_lines(daemon, token,
                         {"prompt": "Write a long story.", "max_tokens": 2000, "temperature": 0},
                         terminate)
    ended = time.monotonic()
    code, err = daemon.finish()
    assert lines[-1]["error"]["code"] == "shutting_down"
    assert lines[-1]["error"]["details"]["drain_timeout"] == 3
    assert 1 < len(lines) < 2000
    assert refused and refused[0] - signalled[0] < 2  # new connections refused while draining
    assert ended - signalled[0] >= 3.0  # the stream ran on until the drain timeout
    assert code == 0 and "Traceback" not in err
    assert '"event": "drain_timeout"' in err
    assert not (isolated_env / "state" / "llamahomed.pid").exists()
    assert len(worker_pids) == 1
    assert not psutil.pid_exists(worker_pids[0])  # the model worker was stopped, not orphaned


@pytest.mark.parametrize("case", ["bad_toml", "bad_value", "models_dir_is_a_file", "port_taken"])
def test_startup_failures_are_one_line_and_exit_1(case: str, tmp_path: Path,
                                                   models_dir: Path) -> None:
    config = write_config(tmp_path / "c.toml")
    args = ["start", "--port", str(free_port()), "--config", str(config),
            "--models-dir", str(models_dir)]
    blocker = None
    if case == "bad_toml":
        config.write_text("port = [\n")
    elif case == "bad_value":
        config.write_text("install_default_model = false\nn_batch = 'eighty'\n")
    elif case == "models_dir_is_a_file":
        args[-1] = str(config / "models")
    else:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        args[2] = str(blocker.getsockname()[1])
    try:
        result = llamahomed(*args)
    finally:
        if blocker is not None:
            blocker.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("llamahomed: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    expected = {"bad_toml": "cannot read config file", "bad_value": "invalid setting n_batch",
                "models_dir_is_a_file": "cannot create", "port_taken": "port is taken"}[case]
    assert expected in errors[0]


def test_start_detach_status_and_stop(models_dir: Path, tmp_path: Path, isolated_env: Path) -> None:
    config = write_config(tmp_path / "c.toml")
    common = ["--config", str(config), "--models-dir", str(models_dir)]
    assert llamahomed("status", *common).returncode == 3
    assert json.loads(llamahomed("status", "--json", *common).stdout) == {"running": False}
    started = llamahomed("start", "--detach", "--port", "0", *common)
    assert started.returncode == 0, started.stderr
    state = isolated_env / "state"
    pid = int((state / "llamahomed.pid").read_text())
    assert f"pid {pid}" in started.stdout
    try:
        again = llamahomed("start", "--detach", "--port", "0", *common)
        assert again.returncode == 1 and "already running" in again.stderr
        runtime = json.loads((state / "daemon.json").read_text())
        assert runtime["pid"] == pid
        url = f"http://127.0.0.1:{runtime['port']}/api/v1/process"
        request = urllib.request.Request(url, data=json.dumps(
            {"prompt": "hi", "max_tokens": 3, "temperature": 0}).encode(), headers={
            "Authorization": f"Bearer {admin_token(isolated_env)}",
            "Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=60).status == 200  # noqa: S310
        scrape = urllib.request.Request(f"http://127.0.0.1:{runtime['port']}/metrics", headers={
            "Authorization": f"Bearer {admin_token(isolated_env)}"})
        text = urllib.request.urlopen(scrape, timeout=30).read().decode()  # noqa: S310
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("vllm:generation_tokens_total", (("model_name", TINY_MODEL_ID),))] == 3
        assert samples[("llamahome_process_resident_memory_bytes",
                        (("process", f"worker:{TINY_MODEL_ID}"),))] > 0
        table = llamahomed("status", *common)
        assert table.returncode == 0, table.stderr
        assert TINY_MODEL_ID in table.stdout and "loaded models" in table.stdout
        assert "0/8" in table.stdout  # slots in use / slots
        report = json.loads(llamahomed("status", "--json", *common).stdout)
        assert report["running"] is True and report["pid"] == pid
        (model,) = report["models"]
        assert model["id"] == TINY_MODEL_ID and model["plan"]["n_slots"] == 8
        assert model["rss_bytes"] > 0 and report["uptime_s"] >= 0
    finally:
        stopped = llamahomed("stop", *common)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped llamahomed (pid {pid})" in stopped.stdout
    assert not (state / "llamahomed.pid").exists()
    log = (state / "llamahomed.log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in log if line.startswith("{")]
    assert "listening" in events and "request" in events and events[-1] == "stopped"


@pytest.mark.gemma
def test_a_second_sigterm_ends_the_drain_at_once(gemma_file: Path, tmp_path: Path,
                                                 isolated_env: Path) -> None:
    store = tmp_path / "g"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    config = write_config(tmp_path / "c.toml", default_model="gemma3-270m")
    daemon = Process(store, config, env={"LLAMAHOME_DRAIN_TIMEOUT": "300"})
    daemon.wait_listening()
    signalled: list[float] = []

    def terminate_twice() -> None:
        signalled.append(time.monotonic())
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        daemon.proc.send_signal(signal.SIGTERM)

    lines = stream_lines(daemon, admin_token(isolated_env),
                         {"prompt": "Write a long story.", "max_tokens": 2000, "temperature": 0},
                         terminate_twice)
    ended = time.monotonic()
    code, err = daemon.finish()
    assert lines[-1]["error"]["code"] == "shutting_down"
    assert lines[-1]["error"]["details"]["forced"] is True
    assert ended - signalled[0] < 60  # far from the 300 s drain timeout
    assert code == 0 and "Traceback" not in err
