"""The blocking client (``llamahome.client.SyncClient``): the async client's methods, for scripts.

Each method is made from the same :class:`~llamahome._base.BaseClient` builder
as the async one by :func:`sync_method`; only :meth:`SyncClient._send` differs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from ._base import (
    BaseClient,
    Call,
    Request,
    StreamInfo,
    StreamParser,
    decode_response,
    stream_method,
)
from ._sync_transport import SyncResponse, SyncTransport
from .types import StreamChunk

__all__ = ["SyncClient", "SyncResponseStream"]

P = ParamSpec("P")
T = TypeVar("T")
_ClientT = TypeVar("_ClientT", bound="SyncClient")


def sync_method(
    build: Callable[Concatenate[BaseClient, P], Call[T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """The sync client's method for one builder: build the call, then send it."""

    @functools.wraps(build)
    def method(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(build(self, *args, **kwargs))

    return method


class SyncResponseStream(StreamInfo):
    """An iterator of :class:`StreamChunk`; ``close()`` or leaving ``with`` stops it early."""

    def __init__(self, client: SyncClient, request: Request, chunk_size: int | None) -> None:
        super().__init__(StreamParser(chunk_size))
        self._client = client
        self._request = request
        self._response: SyncResponse | None = None
        self._pending: list[StreamChunk] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<SyncResponseStream {self._request.url} closed={self.closed}>"

    def __iter__(self) -> SyncResponseStream:
        return self

    def __next__(self) -> StreamChunk:
        try:
            while not self._pending:
                if self._parser.end is not None or self.closed:
                    raise StopIteration
                response = self._open()
                self._pending = self._parser.feed(response.read_chunk())
                if self._parser.end is not None:
                    response.finish()
        except BaseException:
            self.close()
            raise
        return self._pending.pop(0)

    def _open(self) -> SyncResponse:
        if self._response is None:
            self._response = self._client._send(self._request)
        return self._response

    def __enter__(self) -> SyncResponseStream:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream and close its HTTP response. Idempotent."""
        self.closed = True
        response, self._response = self._response, None
        if response is not None:
            response.close()


class SyncClient(BaseClient):
    """Blocking client with the methods of :class:`~llamahome.client.APIClient`.

    Keeps up to ``pool_size`` idle keep-alive connections; ``close()`` (or
    leaving ``with``) closes them, and so does garbage collection. Safe to
    share between threads.
    """

    _transport: SyncTransport

    def _open_transport(self) -> None:
        self._transport = SyncTransport(self.timeout, self.pool_size or 10)

    def __enter__(self: _ClientT) -> _ClientT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle connections. The client stays usable."""
        self._transport.close()

    @contextlib.contextmanager
    def session(self: _ClientT) -> Iterator[_ClientT]:
        """A copy of this client with its own connections, closed when the block ends."""
        bound = copy.copy(self)
        bound._transport = self._transport.copy()
        with bound:
            yield bound

    # -- sending: the only code that differs from the async client ---------------

    def _send(self, request: Request) -> SyncResponse:
        def attempt() -> SyncResponse:
            response = self._transport.send(request)
            if response.status >= 400:
                decode_response(response.status, response.headers, response.read_all())
            return response

        return self.retry.run_sync(attempt, breaker=self.circuit_breaker)

    def _call(self, call: Call[T]) -> T:
        replies = []
        for request in call.requests:
            response = self._send(request)
            body = response.read_all()
            replies.append(decode_response(response.status, response.headers, body))
        return call.parse(replies)

    # -- the API ----------------------------------------------------------------

    process_prompt = sync_method(BaseClient._process_call)
    process = process_prompt
    process_batch = sync_method(BaseClient._batch_call)
    batch_process = process_batch
    process_batch_settled = sync_method(BaseClient._batch_settled_call)
    list_models = sync_method(BaseClient._list_models_call)
    get_model = sync_method(BaseClient._get_model_call)
    get_config = sync_method(BaseClient._get_config_call)
    update_config = sync_method(BaseClient._update_config_call)
    health = sync_method(BaseClient._health_call)
    stream_response = stream_method(BaseClient._stream_request, SyncResponseStream)
