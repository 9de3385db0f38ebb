"""Many generations over one WebSocket (``GET /api/v1/ws``)::

    from llamahome.websocket import WebSocketClient

    async with WebSocketClient() as ws:            # the local daemon and its token, as APIClient
        a, b = await asyncio.gather(ws.process("Query 1"), ws.process("Query 2"))
        async for chunk in ws.stream("Tell me a story", max_tokens=200):
            print(chunk.text, end="")

Every request gets its own id; replies are routed to it as they interleave. Leaving a
``stream`` early (``break``, an exception, ``await stream.cancel()``) sends ``{"cancel": id}``,
and closing the client cancels everything still running on the daemon at its next step.
Errors raise the same :mod:`llamahome.error` classes as the HTTP client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from ._config import default_api_key, default_endpoint
from ._envelope import _error_from_item
from .error import APIConnectionError, APIError, error_from_response
from .types import ProcessResponse, StreamChunk

__all__ = ["WebSocketClient", "WebSocketStream"]

WS_PATH = "/api/v1/ws"
_CLOSED = object()


class WebSocketClient:
    """One WebSocket to the daemon, shared by any number of concurrent requests."""

    def __init__(self, api_key: str | None = None, endpoint: str | None = None, *,
                 heartbeat: float = 30.0) -> None:
        self.api_key = api_key if api_key is not None else default_api_key()
        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        self._heartbeat = heartbeat
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._lost: APIError | None = None

    async def __aenter__(self) -> WebSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the socket (done by ``async with``); refused upgrades raise APIError subclasses."""
        if self._ws is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.endpoint + WS_PATH, headers=headers,
                                                      heartbeat=self._heartbeat, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            await self._session.close()
            self._session = None
            error = error_from_response(exc.status, exc.message, dict(exc.headers or {}))
            raise error from exc
        except (aiohttp.ClientError, OSError) as exc:
            await self._session.close()
            self._session = None
            raise APIConnectionError(f"cannot reach the daemon at {self.endpoint}: {exc}") from exc
        self._lost = None
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        """Close the socket; the daemon cancels whatever was still running."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._ws = self._reader = self._session = None

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                queue = self._queues.get(str(data.get("id")))
                if queue is not None:
                    queue.put_nowait(data)
        finally:
            self._lost = APIConnectionError("the WebSocket to the daemon closed")
            for queue in self._queues.values():
                queue.put_nowait(_CLOSED)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise self._lost or APIConnectionError("the WebSocket is not open; use 'async with'")
        try:
            await self._ws.send_str(json.dumps(message))
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise APIConnectionError(f"the WebSocket to the daemon broke: {exc}") from exc

    def stream(self, prompt: str, **fields: Any) -> WebSocketStream:
        """The chunks of one generation (``fields``: the process fields: model, max_tokens...)."""
        return WebSocketStream(self, prompt, fields)

    async def process(self, prompt: str, **fields: Any) -> ProcessResponse:
        """One whole generation over the socket, like ``APIClient.process_prompt``."""
        stream = self.stream(prompt, **fields)
        parts = [chunk.text async for chunk in stream]
        assert stream.final is not None
        return ProcessResponse.from_dict({**stream.final, "text": "".join(parts)})


class WebSocketStream:
    """An async iterator of :class:`StreamChunk`; ``final`` holds the last message after it."""

    def __init__(self, client: WebSocketClient, prompt: str, fields: dict[str, Any]) -> None:
        self._client = client
        self.request_id = f"r{next(client._ids)}"
        self._request = {"id": self.request_id, "prompt": prompt, **fields}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._started = False
        self.final: dict[str, Any] | None = None
        """The ``done`` message (usage, finish_reason, model, created) once the stream ended."""

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamChunk]:
        client = self._client
        client._queues[self.request_id] = self._queue
        ended = False
        try:
            await client._send(self._request)
            self._started = True
            while True:
                message = await self._queue.get()
                if message is _CLOSED:
                    raise client._lost or APIConnectionError("the WebSocket closed")
                if "error" in message:
                    ended = True
                    raise _error_from_item(message["error"])
                if message.get("done"):
                    ended = True
                    self.final = message
                    return
                yield StreamChunk(text=message["chunk"], index=int(message["index"]))
        finally:
            if self._started and not ended:
                await self.cancel()
            client._queues.pop(self.request_id, None)

    async def cancel(self) -> None:
        """Ask the daemon to stop this generation (it ends with ``finish_reason: cancelled``)."""
        ws = self._client._ws
        if ws is not None and not ws.closed:
            try:
                await self._client._send({"cancel": self.request_id})
            except APIConnectionError:
                pass
