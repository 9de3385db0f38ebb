"""The aiohttp half of the async client: sessions, sending, and error translation.

Session policy: inside ``async with client:`` (or ``client.session()``) one
``aiohttp.ClientSession`` is created lazily, inside the running loop, on first
use, reused by every call and closed on exit (or by ``client.close()``).
Outside such a block each call opens a short-lived session and closes it when
the response is done with. That costs a new local TCP connection per call,
but a client that is never closed then leaves nothing open behind it (no
"Unclosed client session" at exit) and works across several ``asyncio.run``
calls, which a session cached on the client would not.

aiohttp exceptions become :class:`~llamahome.error.APIConnectionError` /
:class:`~llamahome.error.APITimeoutError` in one place, :func:`_translated`,
wrapped around sending (:meth:`AiohttpTransport.send`) and around each read of
a body (which, for streams, happens long after ``send`` returned).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping

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
        self, response: aiohttp.ClientResponse, owned_session: aiohttp.ClientSession | None
    ) -> None:
        self._response = response
        self._owned_session = owned_session
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.url = str(response.url)

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        with _translated(self.url):
            return await self._response.content.readany()

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
        session, self._owned_session = self._owned_session, None
        if session is not None:
            await session.close()


class AiohttpTransport:
    """Sends :class:`~llamahome._base.Request` objects with aiohttp."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._shared: aiohttp.ClientSession | None = None
        self._depth = 0

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
        if session is not None:
            await session.close()

    def _session(self) -> tuple[aiohttp.ClientSession, bool]:
        """The session for one call, and whether the call owns (must close) it."""
        if self._depth == 0:
            return aiohttp.ClientSession(), True
        if self._shared is None or self._shared.closed:
            self._shared = aiohttp.ClientSession()
        return self._shared, False

    def _client_timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        if stream:
            return aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout, sock_read=self._timeout
            )
        return aiohttp.ClientTimeout(total=self._timeout)

    async def send(self, request: Request) -> OpenResponse:
        """Send ``request``; the one function through which every request goes."""
        session, owned = self._session()
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
            if owned:
                await session.close()
            raise
        return OpenResponse(response, session if owned else None)
