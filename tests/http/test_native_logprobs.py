"""``logprobs`` / ``top_logprobs`` on the native API: process, stream, batch and WebSocket,
through the real app and a real worker on the tiny model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.test_generate import process, stream_lines
from tests.http.test_ws import run_until_done

ASK = {"prompt": "the cat sat on", "temperature": 0, "max_tokens": 8, "logprobs": True,
       "top_logprobs": 2}


def same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """The same tokens and numbers (a prompt-cache hit may move the last digits)."""
    assert [e["bytes"] for e in got] == [e["bytes"] for e in want]
    assert [e["logprob"] for e in got] == pytest.approx([e["logprob"] for e in want], abs=1e-4)


def check(entries: list[dict[str, Any]], text: str, top: int) -> None:
    assert "".join(e["token"] for e in entries) == text
    for found in entries:
        assert found["logprob"] <= 0 and bytes(found["bytes"]).decode("utf-8", "replace")
        assert len(found["top_logprobs"]) == top
        assert found["top_logprobs"][0]["logprob"] >= found["top_logprobs"][-1]["logprob"]


async def test_process_and_stream_carry_the_same_logprobs(api: Any, auth: dict[str, str]) -> None:
    data = await process(api, auth, **ASK)
    assert len(data["logprobs"]) == data["usage"]["completion_tokens"]
    check(data["logprobs"], data["text"], 2)
    lines = await stream_lines(api, auth, **ASK)
    streamed = [e for line in lines if "chunk" in line for e in line.get("logprobs", [])]
    same(streamed, data["logprobs"])
    assert "logprobs" not in await process(api, auth, prompt="the cat", max_tokens=2)


async def test_batch_and_websocket_items_get_logprobs(api: Any, auth: dict[str, str]) -> None:
    batch = {**ASK, "prompts": [ASK["prompt"], "a dog"]}
    del batch["prompt"]
    response = await api.post("/api/v1/batch", json=batch, headers=auth)
    assert response.status == 200
    first, second = (await response.json())["results"]
    check(first["logprobs"], first["text"], 2)
    check(second["logprobs"], second["text"], 2)
    async with api.ws_connect("/api/v1/ws", headers=auth) as ws:
        await ws.send_json({"id": "w", **ASK})
        messages = (await run_until_done(ws, {"w"}))["w"]
    entries = [e for m in messages if "chunk" in m for e in m.get("logprobs", [])]
    same(entries, first["logprobs"])


async def test_bad_logprob_fields_are_validation_errors(api: Any, auth: dict[str, str]) -> None:
    for body, field in (({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
                        ({"top_logprobs": 2}, "top_logprobs"),
                        ({"logprobs": "yes please"}, "logprobs")):
        response = await api.post("/api/v1/process", json={"prompt": "x", **body}, headers=auth)
        assert response.status == 422, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "validation_error"
        assert field in error["message"] or any(
            field in e.get("field", "") or field in e.get("message", "")
            for e in error["details"]["errors"]), error
