"""The async Python client for ``llamahomed``.

::

    client = APIClient()                       # local daemon, key from the state dir
    response = await client.process_prompt("Summarize this text", max_tokens=100)

    async for chunk in client.stream_response("Generate a story"):
        print(chunk.text, end="", flush=True)

    async with client.session() as session:   # one reused connection pool
        result = await session.process("Query")

A client used outside ``async with`` opens a short-lived HTTP session per call
and closes it when that call is done, so a client that is never closed leaks
nothing. Inside ``async with client:`` or ``client.session()`` one session is
reused and closed on exit. See :mod:`llamahome._transport` for the reasons.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from ._base import (
    BaseClient,
    Call,
    NDJSONDecoder,
    Request,
    StreamEnd,
    decode_response,
    parse_stream_line,
    split_text,
)
from ._transport import AiohttpTransport, OpenResponse
from .error import APIConnectionError, APIError
from .types import ModelInfo, ProcessResponse, StreamChunk, Usage

__all__ = ["APIClient", "ResponseStream"]

_T = TypeVar("_T")
_ClientT = TypeVar("_ClientT", bound="APIClient")


class APIClient(BaseClient):
    """Async client for the LlamaHome API.

    ``api_key`` defaults to ``$LLAMAHOME_API_KEY``, then the daemon's
    ``admin.token``; ``endpoint`` to ``$LLAMAHOME_ENDPOINT``, then the running
    daemon's ``daemon.json``, then ``http://127.0.0.1:8910``. ``timeout`` (s)
    bounds a whole request, or for streams the connect and each gap between
    reads. Failures raise :class:`~llamahome.error.APIError` subclasses.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(api_key, endpoint, timeout=timeout)
        self._transport = AiohttpTransport(self.timeout)

    # -- connection handling --------------------------------------------------

    async def __aenter__(self: _ClientT) -> _ClientT:
        self._transport.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.exit()

    async def close(self) -> None:
        """Close the reused HTTP session, if any. The client stays usable."""
        await self._transport.close()

    @contextlib.asynccontextmanager
    async def session(self: _ClientT) -> AsyncIterator[_ClientT]:
        """A copy of this client that reuses one HTTP session until the block ends."""
        bound = copy.copy(self)
        bound._transport = AiohttpTransport(self.timeout)
        async with bound:
            yield bound

    async def _call(self, call: Call[_T]) -> _T:
        response = await self._transport.send(call.request)
        body = await response.read_all()
        return call.parse(decode_response(response.status, response.headers, body))

    async def _open_stream(self, request: Request) -> OpenResponse:
        response = await self._transport.send(request)
        if response.status >= 400:
            decode_response(response.status, response.headers, await response.read_all())
        return response

    # -- generation -----------------------------------------------------------

    async def process_prompt(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        *,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        repeat_penalty: float | None = None,
        **extra: Any,
    ) -> ProcessResponse:
        """Generate a completion for ``prompt`` (``POST /api/v1/process``).

        Options left as ``None`` are not sent, so the daemon's defaults apply;
        ``extra`` keyword arguments are sent as further body fields.
        """
        fields = self._generation_fields(
            model, max_tokens, temperature, top_p, top_k, stop, seed, repeat_penalty, extra
        )
        return await self._call(self._process_call(prompt, fields))

    process = process_prompt
    """Alias of :meth:`process_prompt` (the API guide's ``session.process``)."""

    def stream_response(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        *,
        chunk_size: int | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        repeat_penalty: float | None = None,
        **extra: Any,
    ) -> ResponseStream:
        """Stream a completion (``POST /api/v1/stream``); iterate it with ``async for``.

        Nothing is sent until iteration (or ``async with``) starts.
        ``chunk_size`` caps the characters in one yielded chunk; longer chunks
        from the daemon are split. ``None`` yields them as sent.
        """
        fields = self._generation_fields(
            model, max_tokens, temperature, top_p, top_k, stop, seed, repeat_penalty, extra
        )
        return ResponseStream(self, self._stream_request(prompt, chunk_size, fields), chunk_size)

    @overload
    async def process_batch(
        self,
        prompts: Sequence[str],
        model: str | None = ...,
        batch_size: int = ...,
        *,
        return_exceptions: Literal[False] = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        top_k: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        repeat_penalty: float | None = ...,
        **extra: Any,
    ) -> list[ProcessResponse]: ...

    @overload
    async def process_batch(
        self,
        prompts: Sequence[str],
        model: str | None = ...,
        batch_size: int = ...,
        *,
        return_exceptions: bool,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        top_k: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        repeat_penalty: float | None = ...,
        **extra: Any,
    ) -> list[ProcessResponse | APIError]: ...

    async def process_batch(
        self,
        prompts: Sequence[str],
        model: str | None = None,
        batch_size: int = 8,
        *,
        return_exceptions: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        repeat_penalty: float | None = None,
        **extra: Any,
    ) -> list[ProcessResponse] | list[ProcessResponse | APIError]:
        """Generate a completion for each prompt (``POST /api/v1/batch``), in order.

        Prompts go in groups of ``batch_size``, one group after another. A
        failed item raises its :class:`APIError` unless ``return_exceptions``
        is true, in which case the error takes the item's place. A failure of a
        whole group request (HTTP error, connection) always raises.
        """
        fields = self._generation_fields(
            model, max_tokens, temperature, top_p, top_k, stop, seed, repeat_penalty, extra
        )
        results: list[ProcessResponse | APIError] = []
        for call in self._batch_calls(prompts, batch_size, fields):
            items = await self._call(call)
            if not return_exceptions:
                for item in items:
                    if isinstance(item, APIError):
                        raise item
            results.extend(items)
        return results

    batch_process = process_batch
    """Alias of :meth:`process_batch` (the API guide's ``client.batch_process``)."""

    # -- models, config, health -------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """The models the daemon can serve (``GET /api/v1/models``)."""
        return await self._call(self._list_models_call())

    async def get_model(self, model_id: str) -> ModelInfo:
        """One model's details (``GET /api/v1/models/{model_id}``)."""
        return await self._call(self._get_model_call(model_id))

    async def get_config(self) -> dict[str, Any]:
        """The daemon's settings (``GET /api/v1/config``)."""
        return await self._call(self._get_config_call())

    async def update_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change settings (``POST /api/v1/config``); returns the daemon's reply."""
        return await self._call(self._update_config_call(changes))

    async def health(self) -> dict[str, Any]:
        """The daemon's health report (``GET /health``)."""
        return await self._call(self._health_call())


class ResponseStream:
    """An async iterator of :class:`StreamChunk` for one streamed completion.

    ``usage``, ``finish_reason``, ``model`` and ``created`` are set when the
    final line arrives. ``aclose()`` (or leaving ``async with``) before the end
    closes the HTTP response, so the daemon sees the disconnect and stops
    generating. Breaking out of ``async for`` without closing also closes it:
    the stream is then dropped, and asyncio finalizes the async generator
    inside it on the next loop iteration. Explicit ``aclose()`` or
    ``async with`` is still the prompt, deterministic way.
    """

    def __init__(self, client: APIClient, request: Request, chunk_size: int | None) -> None:
        self._state = _StreamState(client, request, chunk_size)
        self._chunks: AsyncGenerator[StreamChunk, None] | None = None

    def __repr__(self) -> str:
        return f"<ResponseStream {self._state.request.url} closed={self._state.closed}>"

    @property
    def usage(self) -> Usage | None:
        return self._state.end.usage if self._state.end else None

    @property
    def finish_reason(self) -> str | None:
        return self._state.end.finish_reason if self._state.end else None

    @property
    def model(self) -> str | None:
        return self._state.end.model if self._state.end else None

    @property
    def created(self) -> str | None:
        return self._state.end.created if self._state.end else None

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._chunks is None:
            self._chunks = _generate(self._state)
        return await self._chunks.__anext__()

    async def __aenter__(self) -> ResponseStream:
        await self._state.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and close its HTTP response. Idempotent."""
        self._state.closed = True
        if self._chunks is not None:
            await self._chunks.aclose()
        await self._state.release()


class _StreamState:
    """What a stream's generator works on; kept apart from :class:`ResponseStream`
    so that the generator does not reference the stream (no cycle: dropping the
    stream finalizes the generator at once)."""

    def __init__(self, client: APIClient, request: Request, chunk_size: int | None) -> None:
        self.client = client
        self.request = request
        self.chunk_size = chunk_size
        self.response: OpenResponse | None = None
        self.end: StreamEnd | None = None
        self.closed = False

    async def start(self) -> OpenResponse:
        if self.closed:
            raise RuntimeError("the stream is closed")
        if self.response is None:
            self.response = await self.client._open_stream(self.request)
        return self.response

    async def release(self) -> None:
        self.closed = True
        response, self.response = self.response, None
        if response is not None:
            await response.aclose()


async def _generate(state: _StreamState) -> AsyncGenerator[StreamChunk, None]:
    try:
        response = await state.start()
        decoder, index = NDJSONDecoder(), 0
        while True:
            data = await response.read_chunk()
            for line in decoder.feed(data) if data else decoder.close():
                event = parse_stream_line(line)
                if isinstance(event, StreamEnd):
                    state.end = event
                    return
                if event is None:
                    continue
                for text in split_text(event.text, state.chunk_size):
                    yield StreamChunk(text, index)
                    index += 1
            if not data:
                raise APIConnectionError("the stream ended before its final line")
    finally:
        await state.release()
