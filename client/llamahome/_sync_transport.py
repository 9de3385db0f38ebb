"""The blocking half of the sync client: ``http.client`` with a small keep-alive pool.

Standard library only, so scripts need nothing beyond the client's own
dependencies. Idle connections are kept per client (at most ``pool_size``)
and reused; a reused connection that the server had already closed is
replaced once, transparently (the request never reached the server). A
weakref finalizer closes idle sockets when the client is garbage collected,
so a client that is never closed leaves no open socket behind.

Socket, ``http.client`` and timeout failures become
:class:`~llamahome.error.APIConnectionError` / :class:`~llamahome.error.APITimeoutError`
in one place, :func:`_translated`. ``timeout`` bounds the connection and each
read (``http.client`` has no whole-request deadline).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping

from ._base import Request
from .error import APIConnectionError, APITimeoutError

__all__ = ["SyncResponse", "SyncTransport"]

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except (socket.timeout, TimeoutError) as exc:
        raise APITimeoutError(f"request to {url} timed out") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise APIConnectionError(f"cannot talk to {url}: {exc!r}") from exc


class _Pool:
    """Idle keep-alive connections of one client; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def take(self) -> http.client.HTTPConnection | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class SyncResponse:
    """A response whose status and headers have arrived; the body is read on demand."""

    def __init__(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
        pool: _Pool, url: str,
    ) -> None:
        self._conn: http.client.HTTPConnection | None = conn
        self._response = response
        self._pool = pool
        self.url = url
        self.status: int = response.status
        self.headers: Mapping[str, str] = dict(response.getheaders())

    def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        with _translated(self.url):
            data = self._response.read1(65536)
        if not data:
            self.close()
        return data

    def finish(self) -> None:
        """Read what is left of the body (after a stream's last line: its end), so that the
        connection can be reused, then close."""
        try:
            with _translated(self.url):
                self._response.read()
        except APIConnectionError:
            pass
        self.close()

    def read_all(self) -> bytes:
        """The whole body; the response is closed afterwards."""
        try:
            with _translated(self.url):
                return self._response.read()
        finally:
            self.close()

    def close(self) -> None:
        """Give a fully read connection back to the pool, or drop it. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._response.isclosed() and not self._response.will_close:
            self._pool.give(conn)
        else:
            self._response.close()
            conn.close()


class SyncTransport:
    """Sends :class:`~llamahome._base.Request` objects with ``http.client``."""

    def __init__(self, timeout: float, pool_size: int = 10) -> None:
        self._timeout = timeout
        self._pool = _Pool(pool_size)
        self._finalizer = weakref.finalize(self, self._pool.close)

    def copy(self) -> SyncTransport:
        return SyncTransport(self._timeout, self._pool.size)

    def close(self) -> None:
        """Close idle connections. Idempotent; the transport stays usable."""
        self._pool.close()

    def _connect(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host, port = url.hostname or "127.0.0.1", url.port
        if url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self._timeout)
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def send(self, request: Request) -> SyncResponse:
        """Send ``request``; the one function through which every sync request goes."""
        url = urllib.parse.urlsplit(request.url)
        target = url.path + (f"?{url.query}" if url.query else "")
        with _translated(request.url):
            conn = self._pool.take()
            if conn is not None:
                try:
                    return self._exchange(conn, target, request)
                except _STALE:
                    conn.close()  # the server closed this idle connection; try a new one
            return self._exchange(self._connect(url), target, request)

    def _exchange(
        self, conn: http.client.HTTPConnection, target: str, request: Request
    ) -> SyncResponse:
        try:
            conn.request(request.method, target, body=request.body, headers=dict(request.headers))
            response = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        return SyncResponse(conn, response, self._pool, request.url)
