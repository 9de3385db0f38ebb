"""The aiohttp half of the async client: sessions, sending, and error translation.

Session policy: inside ``async with client:`` (or ``client.session()``) one
``aiohttp.ClientSession`` is created lazily, inside the running loop, on first
use, reused by every call and closed on exit (or by ``client.close()``).
Outside such a block each call opens a short-lived session and closes it when
the response is done with. That costs a new local TCP connection per call,
but a client that is never closed then leaves nothing open behind it (no
"Unclosed client session" at exit) and works across several ``asyncio.run``
calls, which a session cached on the client would not.

A pooled transport (``pool_size`` set, :class:`~llamahome.client.PooledClient`)
keeps one session per event loop open across calls, with at most
``pool_size`` connections. A keeper task closes it after ``idle_timeout``
seconds without calls, or when the loop shuts down (``asyncio.run`` cancels
the keeper, whose ``finally`` closes the session), so it is never left
unclosed either.

aiohttp exceptions become :class:`~llamahome.error.APIConnectionError` /
:class:`~llamahome.error.APITimeoutError` in one place, :func:`_translated`,
wrapped around sending (:meth:`AiohttpTransport.send`) and around each read of
a body (which, for streams, happens long after ``send`` returned).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping

import aiohttp

from ._base import Request
from .error import APIConnectionError, APITimeoutError

__all__ = ["AiohttpTransport", "OpenResponse"]


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    """Re-raise aiohttp and socket failures as this package's errors."""
    try:
        yield
    except asyncio.TimeoutError as exc:  # aiohttp.ServerTimeoutError included.
        raise APITimeoutError(f"request to {url} timed out") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise APIConnectionError(f"cannot talk to {url}: {exc}") from exc


class OpenResponse:
    """A response whose status and headers have arrived; the body is read on demand."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        owned_session: aiohttp.ClientSession | None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._response = response
        self._owned_session = owned_session
        self._on_close = on_close
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.url = str(response.url)

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        with _translated(self.url):
            return await self._response.content.readany()

    async def finish(self) -> None:
        """Read what is left of the body (after a stream's last line: its end), so that the
        connection can be reused, then close."""
        try:
            with _translated(self.url):
                await self._response.read()
        except APIConnectionError:
            pass
        await self.aclose()

    async def read_all(self) -> bytes:
        """The whole body; the response is closed afterwards."""
        try:
            with _translated(self.url):
                return await self._response.read()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the response; an unfinished one drops its connection. Idempotent."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        session, self._owned_session = self._owned_session, None
        if session is not None:
            await session.close()


class AiohttpTransport:
    """Sends :class:`~llamahome._base.Request` objects with aiohttp."""

    def __init__(
        self, timeout: float, *, pool_size: int | None = None, idle_timeout: float = 30.0
    ) -> None:
        self._timeout = timeout
        self._shared: aiohttp.ClientSession | None = None
        self._depth = 0
        self._pool_size = pool_size
        self._idle_timeout = idle_timeout
        self._keeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_used = 0.0
        self._in_flight = 0

    def copy(self) -> AiohttpTransport:
        """A transport with the same settings and no session of its own yet."""
        return AiohttpTransport(
            self._timeout, pool_size=self._pool_size, idle_timeout=self._idle_timeout
        )

    def enter(self) -> None:
        """Start (or nest) a block in which one session is reused."""
        self._depth += 1

    async def exit(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            await self.close()

    async def close(self) -> None:
        """Close the shared session, if one is open. Idempotent."""
        session, self._shared = self._shared, None
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
        if session is not None:
            await session.close()

    def _connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(limit=self._pool_size or 100)

    def _session(self) -> tuple[aiohttp.ClientSession, bool]:
        """The session for one call, and whether the call owns (must close) it."""
        if self._depth == 0 and self._pool_size is None:
            return aiohttp.ClientSession(), True
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        if self._shared is None or self._shared.closed or self._loop is not loop:
            self._shared, self._loop = aiohttp.ClientSession(connector=self._connector()), loop
            if self._pool_size is not None:
                self._keeper = loop.create_task(self._keep(self._shared))
        return self._shared, False

    async def _keep(self, session: aiohttp.ClientSession) -> None:
        """Close a pooled session once idle, or when the loop shuts down."""
        loop = asyncio.get_running_loop()
        try:
            while self._in_flight or loop.time() - self._last_used < self._idle_timeout:
                await asyncio.sleep(max(0.01, self._idle_timeout - (loop.time() - self._last_used)))
        finally:
            if self._shared is session:
                self._shared = None
            await session.close()

    def _client_timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        if stream:
            return aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout, sock_read=self._timeout
            )
        return aiohttp.ClientTimeout(total=self._timeout)

    async def send(self, request: Request) -> OpenResponse:
        """Send ``request``; the one function through which every request goes."""
        session, owned = self._session()
        self._in_flight += 1
        try:
            with _translated(request.url):
                response = await session.request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    data=request.body,
                    timeout=self._client_timeout(request.stream),
                )
        except BaseException:
            self._done()
            if owned:
                await session.close()
            raise
        return OpenResponse(response, session if owned else None, self._done)

    def _done(self) -> None:
        self._in_flight -= 1
        if self._loop is not None and not self._loop.is_closed():
            self._last_used = self._loop.time()
