"""Issue 12.12: on SIGTERM, open connections are drained like HTTP streams: a WebSocket's new
ids and a kept-alive connection's requests get 503 shutting_down, in-flight ids end with a final
shutting_down message, then sockets close with 1001."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TINY_MODEL_FILE
from tests.fixtures.daemon import start_daemon
from tests.fixtures.tiny_gguf import write_tiny_llama

pytestmark = pytest.mark.e2e


def test_sigterm_drains_websockets_and_kept_alive_connections(
        tmp_path: Path, tiny_model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    store.mkdir()
    os.link(tiny_model_file, store / TINY_MODEL_FILE)
    write_tiny_llama(store / "tiny-long.gguf", n_ctx=8192, name="tiny-long")
    monkeypatch.setenv("LLAMAHOME_MODEL_SETTINGS__DEFAULT_MODEL", "tiny-llama")
    monkeypatch.setenv("LLAMAHOME_INSTALL_DEFAULT_MODEL", "false")
    monkeypatch.setenv("LLAMAHOME_DRAIN_TIMEOUT", "2")
    with start_daemon(tmp_path / "daemon", args=["--models-dir", str(store)]) as daemon:
        kept = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        kept.request("GET", "/api/v1/models", headers=daemon.headers)
        first = kept.getresponse()
        assert first.status == 200 and first.getheader("Connection") != "close"
        first.read()

        async def scenario() -> tuple[list[dict[str, object]], int | None, int, dict[str, object]]:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{daemon.url}/api/v1/ws", headers=daemon.headers)
                await ws.send_json({"id": "long", "model": "tiny-long", "prompt": "the cat",
                                    "temperature": 0, "max_tokens": 8000})
                messages = [await ws.receive_json(timeout=60)]
                assert "chunk" in messages[0], messages
                daemon.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                late = await asyncio.to_thread(post_on_kept_alive)
                await ws.send_json({"id": "new", "prompt": "hi", "max_tokens": 2})
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        messages.append(json.loads(message.data))
                return messages, ws.close_code, late[0], late[1]

        def post_on_kept_alive() -> tuple[int, dict[str, object]]:
            kept.request("POST", "/api/v1/process", body=json.dumps({"prompt": "hi"}),
                         headers={**daemon.headers, "Content-Type": "application/json"})
            response = kept.getresponse()
            return response.status, json.loads(response.read())

        try:
            messages, close_code, late_status, late_body = asyncio.run(scenario())
        finally:
            kept.close()
        code = daemon.stop()
    assert late_status == 503 and late_body["error"]["code"] == "shutting_down"  # not a reset
    by_id = {m["id"]: m for m in messages if "error" in m or m.get("done")}
    assert by_id["new"]["error"]["code"] == "shutting_down"
    assert by_id["long"]["error"]["code"] == "shutting_down"  # its final message, after the drain
    assert close_code == 1001
    assert code == 0
