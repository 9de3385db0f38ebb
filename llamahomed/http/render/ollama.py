"""Ollama's NDJSON: one object per text delta, then ``done: true`` with the statistics.

A generation's deltas are ``{"model", "created_at", "response": text, "done": false}``
(/api/generate) or ``{..., "message": {"role": "assistant", "content": text}}`` (/api/chat);
the last object has ``done_reason`` and Ollama's counts and durations in nanoseconds, from the
``Finished`` event. With ``logprobs`` asked, each object carries the entries of its tokens
(``{token, logprob, bytes, top_logprobs}``, Ollama's shape). An error after the first byte is a last ``{"error": "message"}`` line.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from llamahomed.http.redact import for_client
from llamahomed.service.generation import Delta, Errored, Finished, Generation

NDJSON = "application/x-ndjson"

Body = Callable[[str], dict[str, Any]]
"""``body(text)``: the dialect's fields for a piece of text (``response`` or ``message``)."""

_REASONS = {"length": "length"}


def timestamp(epoch: float | None = None) -> str:
    """Ollama's ``created_at``/``modified_at``: RFC 3339 with a time zone."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def _ns(milliseconds: float) -> int:
    return int(round(milliseconds * 1_000_000))


def statistics(finished: Finished) -> dict[str, Any]:
    """The last object's fields: why it ended, Ollama's counts, durations in nanoseconds."""
    durations = finished.durations or {}
    return {"done_reason": _REASONS.get(finished.finish_reason, "stop"),
            "total_duration": _ns(durations.get("total", 0.0)),
            "load_duration": _ns(durations.get("load", 0.0)),
            "prompt_eval_count": int(finished.usage.get("prompt_tokens", 0)),
            "prompt_eval_duration": _ns(durations.get("prefill", 0.0)),
            "eval_count": int(finished.usage.get("completion_tokens", 0)),
            "eval_duration": _ns(durations.get("decode", 0.0))}


def line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode() + b"\n"


async def answer(generation: Generation, name: str, body: Body) -> dict[str, Any]:
    """The whole answer as one object (``stream: false``); raises the sequence's error."""
    result = await generation.result()
    logprobs = {} if result.logprobs is None else {"logprobs": result.logprobs}
    return {"model": name, "created_at": timestamp(), **body(result.text), **logprobs,
            "done": True, **statistics(result.finished)}


async def stream(request: web.Request, generation: Generation, name: str,
                 body: Body) -> web.StreamResponse:
    """Write ``generation`` as Ollama's NDJSON; a client that goes away cancels the sequence."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        async for event in generation.events():
            if isinstance(event, Delta):
                if event.text or event.logprobs:
                    logprobs = {} if event.logprobs is None else {"logprobs": event.logprobs}
                    await response.write(line({"model": name, "created_at": timestamp(),
                                               **body(event.text), **logprobs, "done": False}))
            elif isinstance(event, Errored):
                await response.write(line({"error": for_client(event.error, request).message}))
            else:
                await response.write(line({"model": name, "created_at": timestamp(), **body(""),
                                           "done": True, **statistics(event)}))
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await generation.close()
        raise
    finally:
        await generation.close()
    return response
