"""Raw-HTTP helpers for the OpenAI-compatibility suite: JSON posts, SSE reading, error checks."""

from __future__ import annotations

import json
from typing import Any

import httpx


def ok(http: httpx.Client, path: str, body: Any) -> dict[str, Any]:
    """POST ``body``; asserts a 200 and returns the JSON answer."""
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def error(http: httpx.Client, path: str, body: Any, status: int = 400,
          method: str = "POST") -> dict[str, Any]:
    """Send ``body``; asserts ``status`` and OpenAI's error shape; returns ``error``."""
    response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["error"]
    assert set(found) == {"message", "type", "param", "code"}, found
    assert isinstance(found["message"], str) and found["message"]
    if status == 400:
        assert found["type"] == "invalid_request_error"
    return found


def sse(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """POST a streaming request; the parsed ``data:`` chunks and every raw ``data:`` payload
    (the last should be ``[DONE]``)."""
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [line[len("data: "):] for line in response.iter_lines()
                    if line.startswith("data: ")]
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    return chunks, payloads


def chat_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def completion_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
