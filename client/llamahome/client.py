"""The Python clients for ``llamahomed``.

::

    client = APIClient()                       # local daemon, key from the state dir
    response = await client.process_prompt("Summarize this text", max_tokens=100)

    async for chunk in client.stream_response("Generate a story"):
        print(chunk.text, end="", flush=True)

    async with client.session() as session:   # one reused connection pool
        result = await session.process("Query")

    with SyncClient() as client:               # the same methods, blocking, for scripts
        print(client.process_prompt("Hello").text)

A client used outside ``async with`` opens a short-lived HTTP session per call
and closes it when that call is done, so a client that is never closed leaks
nothing. Inside ``async with client:`` or ``client.session()`` one session is
reused and closed on exit; :class:`PooledClient` keeps one open across calls.
See :mod:`llamahome._transport` for the reasons.

Every public method is made from one builder in :class:`~llamahome._base.BaseClient`
(its signature and docstring) by :func:`async_method` here or
:func:`llamahome._sync.sync_method`: only sending differs between the clients.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._base import (
    BaseClient,
    Call,
    Request,
    StreamInfo,
    StreamParser,
    decode_response,
    stream_method,
)
from ._sync import SyncClient, SyncResponseStream
from ._transport import AiohttpTransport, OpenResponse
from .error import CircuitBreaker, RetryHandler
from .types import ModelInfo, ProcessResponse, StreamChunk

__all__ = [
    "APIClient",
    "LlamaClient",
    "ModelInfo",
    "PooledClient",
    "ProcessResponse",
    "ResponseStream",
    "StreamChunk",
    "SyncClient",
    "SyncResponseStream",
]

P = ParamSpec("P")
T = TypeVar("T")
_ClientT = TypeVar("_ClientT", bound="APIClient")


def async_method(
    build: Callable[Concatenate[BaseClient, P], Call[T]],
) -> Callable[Concatenate[APIClient, P], Coroutine[Any, Any, T]]:
    """The async client's method for one builder: build the call, then send it."""

    @functools.wraps(build)
    async def method(self: APIClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(build(self, *args, **kwargs))

    return method


class ResponseStream(StreamInfo):
    """An async iterator of :class:`StreamChunk` for one streamed completion.

    ``usage``, ``finish_reason``, ``model`` and ``created`` are set when the
    final line arrives. ``aclose()`` (or leaving ``async with``) before the end
    closes the HTTP response, so the daemon sees the disconnect and stops
    generating. Breaking out of ``async for`` without closing also closes it:
    the stream is then dropped, and asyncio finalizes the async generator
    inside it on the next loop iteration. Explicit ``aclose()`` or
    ``async with`` is still the prompt, deterministic way. Opening the stream
    is retried like any call; once the first byte arrived, nothing is.
    """

    def __init__(self, client: APIClient, request: Request, chunk_size: int | None) -> None:
        self._state = _StreamState(client, request, StreamParser(chunk_size))
        super().__init__(self._state.parser)
        self._chunks: AsyncGenerator[StreamChunk, None] | None = None

    def __repr__(self) -> str:
        return f"<ResponseStream {self._state.request.url} closed={self._state.closed}>"

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._chunks is None:
            self._chunks = _generate(self._state)
        return await self._chunks.__anext__()

    async def __aenter__(self) -> ResponseStream:
        await self._state.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
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

    def __init__(self, client: APIClient, request: Request, parser: StreamParser) -> None:
        self.client = client
        self.request = request
        self.parser = parser
        self.response: OpenResponse | None = None
        self.closed = False

    async def start(self) -> OpenResponse:
        if self.closed:
            raise RuntimeError("the stream is closed")
        if self.response is None:
            self.response = await self.client._send(self.request)
        return self.response

    async def release(self) -> None:
        self.closed = True
        response, self.response = self.response, None
        if response is not None:
            await response.aclose()


async def _generate(state: _StreamState) -> AsyncGenerator[StreamChunk, None]:
    try:
        response = await state.start()
        while state.parser.end is None:
            for chunk in state.parser.feed(await response.read_chunk()):
                yield chunk
        await response.finish()
    finally:
        await state.release()


class APIClient(BaseClient):
    """Async client for the LlamaHome API.

    ``api_key`` defaults to ``$LLAMAHOME_API_KEY``, then the daemon's
    ``admin.token``; ``endpoint`` to ``$LLAMAHOME_ENDPOINT``, then the running
    daemon's ``daemon.json``, then ``http://127.0.0.1:8910``. ``timeout`` (s)
    bounds a whole request, or for streams the connect and each gap between
    reads. ``max_retries`` / ``retry`` and ``circuit_breaker`` are described in
    :mod:`llamahome.error`. With ``pool_size`` set, up to that many connections
    stay open across calls (see :class:`PooledClient`); without, each call
    outside ``async with`` / :meth:`session` has its own. Failures raise
    :class:`~llamahome.error.APIError` subclasses.
    """

    _transport: AiohttpTransport
    idle_timeout: float = 30.0
    """With ``pool_size``: seconds without calls after which the pool closes itself."""

    def _open_transport(self) -> None:
        self._transport = AiohttpTransport(self.timeout, pool_size=self.pool_size,
                                           idle_timeout=self.idle_timeout)

    # -- connection handling --------------------------------------------------

    async def __aenter__(self: _ClientT) -> _ClientT:
        self._transport.enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._transport.exit()

    async def close(self) -> None:
        """Close the reused HTTP session, if any. The client stays usable."""
        await self._transport.close()

    @contextlib.asynccontextmanager
    async def session(self: _ClientT) -> AsyncIterator[_ClientT]:
        """A copy of this client that reuses one HTTP session until the block ends."""
        bound = await self.create_session()
        try:
            yield bound
        finally:
            await bound.close()

    async def create_session(self: _ClientT) -> _ClientT:
        """Like :meth:`session` without the block: ``await`` the copy's ``close()`` yourself."""
        bound = copy.copy(self)
        bound._transport = self._transport.copy()
        bound._transport.enter()
        return bound

    # -- sending: the only code that differs from the sync client ---------------

    async def _send(self, request: Request) -> OpenResponse:
        async def attempt() -> OpenResponse:
            response = await self._transport.send(request)
            if response.status >= 400:
                decode_response(response.status, response.headers, await response.read_all())
            return response

        return await self.retry.run(attempt, breaker=self.circuit_breaker)

    async def _call(self, call: Call[T]) -> T:
        replies = []
        for request in call.requests:
            response = await self._send(request)
            body = await response.read_all()
            replies.append(decode_response(response.status, response.headers, body))
        return call.parse(replies)

    # -- the API ----------------------------------------------------------------

    process_prompt = async_method(BaseClient._process_call)
    process = process_prompt  # the API guide's ``client.process`` / ``session.process``
    process_batch = async_method(BaseClient._batch_call)
    batch_process = process_batch  # the API guide's ``client.batch_process``
    process_batch_settled = async_method(BaseClient._batch_settled_call)
    list_models = async_method(BaseClient._list_models_call)
    get_model = async_method(BaseClient._get_model_call)
    get_config = async_method(BaseClient._get_config_call)
    update_config = async_method(BaseClient._update_config_call)
    health = async_method(BaseClient._health_call)
    stream_response = stream_method(BaseClient._stream_request, ResponseStream)


class LlamaClient(APIClient):
    """The API guide's ``LlamaClient(api_key)``: an :class:`APIClient` under that name."""


class PooledClient(APIClient):
    """An :class:`APIClient` that keeps up to ``pool_size`` connections open across calls.

    Calls beyond ``pool_size`` at once wait for a free connection. The pool is
    per event loop and closes itself after ``idle_timeout`` seconds without
    calls or when the loop shuts down; ``await client.close()`` closes it now.
    """

    def __init__(
        self,
        pool_size: int = 10,
        max_retries: int = 2,
        *,
        api_key: str | None = None,
        endpoint: str | None = None,
        timeout: float = 600.0,
        idle_timeout: float = 30.0,
        retry: RetryHandler | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        super().__init__(api_key, endpoint, timeout=timeout, max_retries=max_retries,
                         pool_size=pool_size, retry=retry, circuit_breaker=circuit_breaker)
