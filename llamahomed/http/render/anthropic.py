"""Anthropic's Messages API on the wire: the message object, its SSE events, its errors.

A streamed message is the event sequence Anthropic documents::

    message_start        the message with empty content and the input tokens
    ping
    content_block_start  per block (a text block when the first text arrives; tool_use blocks)
    content_block_delta  text_delta / input_json_delta
    content_block_stop
    message_delta        stop_reason, stop_sequence, usage (output tokens)
    message_stop

each as ``event: <type>`` and ``data: <json>``. An error after the first byte is an ``event:
error`` with the error object (Anthropic's SDKs raise it). Errors before it are rendered by the
error middleware through :func:`anthropic_error_response` (the routes name ``errors="anthropic"``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from llamahome.codes import is_retryable

from llamahomed.core.errors import LlamaHomeError
from llamahomed.http.keys import REQUEST_ID
from llamahomed.http.redact import for_client
from llamahomed.service.generation import Delta, Errored, Finished, Generation

SSE = "text/event-stream"

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
OVERLOADED = 529


# -- errors --------------------------------------------------------------------------------------

def error_status(error: LlamaHomeError) -> int:
    """Anthropic's status for ``error``: an invalid body is 400 (not 422), a busy or draining
    daemon is 529 ``overloaded_error``, every other server-side failure 500 ``api_error``;
    other 4xx keep theirs (typed ``invalid_request_error``, as Anthropic does)."""
    if error.status == 422:
        return 400
    if error.status == 503:
        return OVERLOADED
    if error.status >= 500:
        return 500
    return error.status


def error_body(error: LlamaHomeError, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    status = error_status(error)
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id:
        body["request_id"] = request_id
    return body


def anthropic_error_response(error: LlamaHomeError, headers: dict[str, str]) -> web.Response:
    """The error middleware's renderer for ``errors="anthropic"`` routes. ``x-should-retry``
    (which Anthropic's SDKs obey before their status rules) follows the code table, so a model
    too large for the machine (a 500 here) is not retried; ``request-id`` is Anthropic's header."""
    request_id = headers.get("x-request-id")
    extra = {"x-should-retry": "true" if is_retryable(error.code, error.status) else "false"}
    if request_id:
        extra["request-id"] = request_id
    return web.json_response(error_body(error, request_id), status=error_status(error),
                             headers={**headers, **extra})


# -- the message ---------------------------------------------------------------------------------

def stop_reason(finished: Finished) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)``: ``max_tokens`` for the length limit, ``stop_sequence``
    with the string when one of ``stop_sequences`` ended it, else ``end_turn``."""
    if finished.finish_reason == "length":
        return "max_tokens", None
    if finished.finish_reason == "stop" and finished.stop_sequence is not None:
        return "stop_sequence", finished.stop_sequence
    return "end_turn", None


def usage(values: dict[str, Any]) -> dict[str, int]:
    return {"input_tokens": int(values.get("prompt_tokens", 0)),
            "output_tokens": int(values.get("completion_tokens", 0))}


def message(reply_id: str, model: str, content: list[dict[str, Any]], reason: str | None,
            sequence: str | None, tokens: dict[str, int]) -> dict[str, Any]:
    """A Message object (the whole answer; empty and unfinished in ``message_start``)."""
    return {"id": reply_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": tokens}


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


# -- the stream ----------------------------------------------------------------------------------

class MessageEvents:
    """Writes one message's SSE events in order; keeps which block is open and its index."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.index = -1
        self.open: str | None = None  # the type of the block being written

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": kind, **data}, ensure_ascii=False)
        await self.response.write(f"event: {kind}\ndata: {payload}\n\n".encode())

    async def start(self, opening: dict[str, Any]) -> None:
        await self.send("message_start", {"message": opening})
        await self.send("ping", {})

    async def _open(self, block: dict[str, Any]) -> None:
        await self.close_block()
        self.index += 1
        self.open = str(block["type"])
        await self.send("content_block_start", {"index": self.index, "content_block": block})

    async def close_block(self) -> None:
        if self.open is not None:
            await self.send("content_block_stop", {"index": self.index})
            self.open = None

    async def text(self, text: str) -> None:
        if not text:
            return
        if self.open != "text":
            await self._open(text_block(""))
        await self.send("content_block_delta", {"index": self.index,
                                                "delta": {"type": "text_delta", "text": text}})

    async def tool_use(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        """A whole tool_use block: its start (empty input), the input as one JSON delta, stop."""
        await self._open(tool_use_block(call_id, name, {}))
        await self.send("content_block_delta", {"index": self.index, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(arguments, ensure_ascii=False)}})
        await self.close_block()

    async def finish(self, reason: str, sequence: str | None, tokens: dict[str, int]) -> None:
        await self.close_block()
        await self.send("message_delta", {"delta": {"stop_reason": reason,
                                                    "stop_sequence": sequence},
                                          "usage": tokens})
        await self.send("message_stop", {})

    async def error(self, body: dict[str, Any]) -> None:
        await self.response.write(f"event: error\ndata: {json.dumps(body)}\n\n".encode())


async def stream_message(request: web.Request, generation: Generation, reply_id: str,
                         headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Write ``generation`` as a streamed message; a client that goes away cancels it."""
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache",
                                           **(headers or {})})
    events = MessageEvents(response)
    model = generation.entry.id
    try:
        await response.prepare(request)
        await events.start(message(reply_id, model, [], None, None,
                                   usage({"prompt_tokens": generation.prompt_tokens})))
        async for event in generation.events():
            if isinstance(event, Delta):
                await events.text(event.text)
            elif isinstance(event, Errored):
                await events.error(error_body(for_client(event.error, request),
                                              request.get(REQUEST_ID)))
                break
            else:
                reason, sequence = stop_reason(event)
                await events.finish(reason, sequence, usage(event.usage))
        await response.write_eof()
    finally:
        await generation.close()
    return response
