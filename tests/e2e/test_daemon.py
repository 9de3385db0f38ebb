"""The real ``llamahomed start`` process on a free port, driven by the Python client."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import RunningDaemon, llamahomed, start_daemon

pytestmark = pytest.mark.e2e


@pytest.fixture
def gemma_store(tmp_path: Path, gemma_file: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    return store


@pytest.fixture
def daemon(tmp_path: Path, gemma_store: Path) -> Iterator[RunningDaemon]:
    """``llamahomed start`` with the Gemma store and the test's ``LLAMAHOME_*`` dirs."""
    with start_daemon(tmp_path / "daemon", args=["--models-dir", str(gemma_store)]) as running:
        yield running


async def test_the_daemon_serves_real_text_to_the_client_and_stops_cleanly(daemon: RunningDaemon) -> None:
    from llamahome.client import APIClient

    # Endpoint and token come from the daemon's runtime and token files (LLAMAHOME_STATE_DIR).
    client = APIClient()
    response = await client.process_prompt(prompt="The Eiffel Tower is located in the city of", max_tokens=12,
                                           temperature=0)
    assert "Paris" in response.text
    assert response.usage.completion_tokens >= 1
    assert response.model == "gemma3-270m"
    pieces = [chunk.text async for chunk in client.stream_response(
        prompt="The Eiffel Tower is located in the city of", max_tokens=12, temperature=0)]
    assert "".join(pieces) == response.text
    results = await client.process_batch(prompts=["One, two,", "Red, green,"], max_tokens=4,
                                         batch_size=2)
    assert [r.usage.completion_tokens > 0 for r in results] == [True, True]
    status = llamahomed("status")
    assert status.returncode == 0, status.stderr
    assert "gemma3-270m" in status.stdout and "loaded" in status.stdout
    assert daemon.stop() == 0, daemon.output()
    assert "Traceback" not in daemon.output()


def test_llamahomed_stop_stops_it(daemon: RunningDaemon) -> None:
    result = llamahomed("stop")
    assert result.returncode == 0, result.stderr
    assert daemon.proc.wait(timeout=30) == 0
    assert llamahomed("status").returncode == 3


def test_a_taken_port_is_one_clear_line_and_exit_1(gemma_store: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = llamahomed("start", "--port", str(port), "--models-dir", str(gemma_store))
    assert result.returncode == 1
    assert "port is taken" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_create_makes_a_token_the_daemon_accepts(daemon: RunningDaemon) -> None:
    import json
    import urllib.request

    token = llamahomed("token", "create", "--user", "alice", "--expires-in", "60").stdout.strip()
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/api/v1/models",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["models"][0]["id"] == "gemma3-270m"


def test_models_cli_lists_imports_and_removes(tmp_path: Path, tiny_model_file: Path) -> None:
    store = tmp_path / "m"
    imported = llamahomed("models", "import", str(tiny_model_file), "--models-dir", str(store))
    assert imported.returncode == 0, imported.stderr
    listing = llamahomed("models", "list", "--models-dir", str(store))
    assert "tiny-llama" in listing.stdout and "F32" in listing.stdout
    shown = llamahomed("models", "show", "tiny-llama", "--models-dir", str(store))
    assert '"context_length": 256' in shown.stdout
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    refused = llamahomed("models", "import", str(bad), "--models-dir", str(store))
    assert refused.returncode == 1 and "not a usable GGUF" in refused.stderr
    removed = llamahomed("models", "rm", "tiny-llama", "--models-dir", str(store))
    assert removed.returncode == 0
    assert list(store.glob("*.gguf")) == []
