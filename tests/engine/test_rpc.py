"""ggml's RPC server through ``llamahomed rpc serve``, read back through ggml's RPC client."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from llamahomed.engine.rpc import is_loopback, read_remote_devices, split_endpoint, tcp_problem
from tests.fixtures.daemon import free_port, llamahomed
from tests.fixtures.rpc import rpc_server

MiB = 2**20


def test_a_non_loopback_bind_without_allow_remote_is_refused() -> None:
    result = llamahomed("rpc", "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert "refusing to serve ggml RPC on 0.0.0.0" in result.stderr
    assert "no authentication or encryption" in result.stderr


def test_endpoints_and_loopback_are_recognised() -> None:
    assert split_endpoint("10.0.0.2:50052") == ("10.0.0.2", 50052)
    assert split_endpoint("[::1]:7") == ("::1", 7)
    for bad in ("host", "host:0", "host:99999", ":5", "h:x"):
        with pytest.raises(ValueError):
            split_endpoint(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_served_memory_is_what_mem_offers_read_through_ggml(tmp_path: Path) -> None:
    with rpc_server(tmp_path, mem="40MiB") as server:
        devices, problems = read_remote_devices([server.endpoint])
    assert problems == {}
    [device] = devices
    assert device.endpoint == server.endpoint and device.index == 0
    assert device.name.startswith("RPC")
    assert device.total == 40 * MiB
    assert 0 < device.free <= 40 * MiB
    assert "serving ggml RPC on 127.0.0.1" in server.output()


def test_a_host_that_does_not_answer_is_reported_never_waited_for() -> None:
    closed = free_port()
    with socket.socket() as silent:  # accepts TCP connections but never speaks the protocol
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        devices, problems = read_remote_devices([f"127.0.0.1:{closed}", mute], timeout=3)
        elapsed = time.monotonic() - started
    assert devices == []
    assert "refused" in problems[f"127.0.0.1:{closed}"].lower()
    assert "did not answer within 3 s" in problems[mute]
    assert elapsed < 10
    assert tcp_problem("192.0.2.1:9", timeout=0.3) is not None  # TEST-NET: never routed


def test_llamahomed_plan_shows_the_layers_each_rpc_host_would_hold(tmp_path: Path) -> None:
    from tests.fixtures.daemon import clean_environ
    from tests.fixtures.tiny_gguf import write_tiny_llama

    model = write_tiny_llama(tmp_path / "planned.gguf", n_layer=4)
    with rpc_server(tmp_path, mem="64MiB") as server:
        env = {**clean_environ(), "LLAMAHOME_CONFIG_FILE": str(tmp_path / "none.toml"),
               "LLAMAHOME_SYSTEM_SETTINGS__RPC_SERVERS": f'["{server.endpoint}", "127.0.0.1:{free_port()}"]',
               "LLAMAHOME_SYSTEM_SETTINGS__RPC_POLICY": "always",
               "LLAMAHOME_SYSTEM_SETTINGS__VRAM_RESERVE": "1MiB"}
        result = llamahomed("plan", str(model), env=env)
    assert result.returncode == 0, result.stderr
    assert f"RPC0 ({server.endpoint}) 0-3 + output" in result.stdout
    assert "left out of the plan: Connection refused" in result.stdout
