"""The transport-free half of every client: building requests, parsing replies.

``BaseClient`` turns each API operation into a :class:`Call` (ready
:class:`Request` objects plus the function that parses their decoded JSON
replies) or, for streams, a :class:`Request` whose bytes a
:class:`~llamahome._decoding.StreamParser` reads. Its ``_*_call`` builders carry each operation's one signature and
docstring; the async client (:mod:`llamahome.client`) and the sync client
(:mod:`llamahome._sync`) turn each builder into a public method that only sends
(:func:`llamahome.client.async_method`), so no method body is written twice.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypedDict, TypeVar

from . import _config
from ._version import __version__
from ._decoding import (
    NDJSONDecoder,
    StreamEnd,
    StreamInfo,
    StreamParser,
    StreamText,
    _check_chunk_size,
    decode_response,
    invalid_response,
    parse_stream_line,
    split_text,
)
from ._envelope import _error_from_item
from .error import APIError, CircuitBreaker, RetryHandler
from .types import ModelInfo, ProcessResponse

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "API_PREFIX",
    "USER_AGENT",
    "BaseClient",
    "Call",
    "GenerationOptions",
    "NDJSONDecoder",
    "Request",
    "SamplingOptions",
    "StreamEnd",
    "StreamInfo",
    "StreamParser",
    "StreamText",
    "decode_response",
    "parse_stream_line",
    "split_text",
    "stream_method",
]

USER_AGENT = f"llamahome-python/{__version__}"
API_PREFIX = "/api/v1"
JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")
C = TypeVar("C", bound="BaseClient")
BatchItem = ProcessResponse | APIError


@dataclass(frozen=True)
class Request:
    """Everything a transport needs to send one request."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    stream: bool = False


@dataclass(frozen=True)
class Call(Generic[T]):
    """Requests sent one after another, and the parser of their decoded JSON replies."""

    requests: Sequence[Request]
    parse: Callable[[list[Any]], T]

    @classmethod
    def one(cls, request: Request, parse: Callable[[Any], T]) -> Call[T]:
        return cls((request,), lambda replies: parse(replies[0]))


def drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _parser(build: Callable[[Any], T], what: str) -> Callable[[Any], T]:
    def parse(data: Any) -> T:
        try:
            return build(data)
        except ValueError as exc:
            raise invalid_response(f"unexpected {what} reply: {exc}") from exc

    return parse


def _as_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _models(data: Any) -> list[ModelInfo]:
    models = _as_dict(data).get("models")
    if not isinstance(models, list):
        raise ValueError("'models' must be a list")
    return [ModelInfo.from_dict(item) for item in models]


def _batch_results(expected: int) -> Callable[[Any], list[BatchItem]]:
    def parse(data: Any) -> list[BatchItem]:
        results = _as_dict(data).get("results")
        if not isinstance(results, list) or len(results) != expected:
            raise ValueError(f"'results' must be a list of {expected} items")
        items: list[BatchItem] = []
        for item in results:
            if isinstance(item, dict) and "error" in item:
                items.append(_error_from_item(item["error"]))
            else:
                items.append(ProcessResponse.from_dict(item))
        return items

    return parse


class SamplingOptions(TypedDict, total=False):
    """Optional generation fields; left out, the daemon's configured defaults apply.

    Keyword arguments not listed here are sent as body fields as they are.
    """

    top_p: float
    top_k: int
    min_p: float
    stop: str | Sequence[str]
    seed: int
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    logit_bias: Mapping[str, float]
    format: str | Mapping[str, Any]
    grammar: str


class GenerationOptions(SamplingOptions, total=False):
    max_tokens: int
    temperature: float


def stream_method(
    build: Callable[Concatenate[BaseClient, P], tuple[Request, int | None]],
    stream: Callable[[C, Request, int | None], S],
) -> Callable[Concatenate[C, P], S]:
    """A client's streaming method: the builder's request wrapped in the client's stream type
    (which sends it when iterated)."""

    @functools.wraps(build)
    def method(self: C, /, *args: P.args, **kwargs: P.kwargs) -> S:
        return stream(self, *build(self, *args, **kwargs))

    return method


class BaseClient:
    """Configuration plus one request builder per API operation.

    ``api_key`` and ``endpoint`` default to what :mod:`llamahome._config`
    finds (environment, then the daemon's state directory). ``timeout`` is in
    seconds: the whole request for ordinary calls; for streams, the connection
    and each wait between two reads. ``pool_size`` is how many connections
    are kept open for reuse (see each client). Failed requests are repeated by
    ``retry`` (default ``RetryHandler(max_retries)``) when that is safe, and go
    through ``circuit_breaker`` when one is given.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        timeout: float = 600.0,
        max_retries: int = 2,
        pool_size: int | None = None,
        retry: RetryHandler | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        endpoint = (endpoint or _config.default_endpoint()).rstrip("/")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if pool_size is not None and (isinstance(pool_size, bool) or pool_size < 1):
            raise ValueError("pool_size must be a positive integer")
        self.api_key: str | None = api_key if api_key is not None else _config.default_api_key()
        self.endpoint: str = endpoint
        self.timeout: float = float(timeout)
        self.pool_size: int | None = pool_size
        self.retry: RetryHandler = retry if retry is not None else RetryHandler(max_retries)
        self.circuit_breaker: CircuitBreaker | None = circuit_breaker
        self._open_transport()

    def _open_transport(self) -> None:
        """Make ``self._transport``: the one thing each client kind does its own way."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r})"

    # -- building -----------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None = None,
        *,
        stream: bool = False,
    ) -> Request:
        headers = {
            "Accept": NDJSON_TYPE if stream else JSON_TYPE,
            "User-Agent": USER_AGENT,
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = None
        if json_body is not None:
            headers["Content-Type"] = JSON_TYPE
            text = json.dumps(json_body, ensure_ascii=False, allow_nan=False)
            body = text.encode("utf-8")
        return Request(method, self.endpoint + path, headers, body, stream)

    @staticmethod
    def _fields(model: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        fields = {"model": model, **options}
        stop = fields.get("stop")
        if stop is not None and not isinstance(stop, str):
            fields["stop"] = list(stop)
        return drop_none(fields)

    # -- one builder per operation: its signature and docstring are the public method's ----

    def _process_call(
        self,
        /,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        **options: Unpack[SamplingOptions],
    ) -> Call[ProcessResponse]:
        """Generate a completion for ``prompt`` (``POST /api/v1/process``).

        Options left as ``None`` are not sent, so the daemon's defaults apply;
        ``options`` are the sampling fields of :class:`SamplingOptions`.
        """
        fields = self._fields(model, {"max_tokens": max_tokens, "temperature": temperature,
                                      **options})
        request = self._request("POST", f"{API_PREFIX}/process", {"prompt": prompt, **fields})
        return Call.one(request, _parser(ProcessResponse.from_dict, "process"))

    def _stream_request(
        self,
        /,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        *,
        chunk_size: int | None = None,
        **options: Unpack[SamplingOptions],
    ) -> tuple[Request, int | None]:
        """Stream a completion (``POST /api/v1/stream``) as :class:`StreamChunk` objects.

        Nothing is sent until iteration (or ``with``) starts. ``chunk_size``
        caps the characters in one yielded chunk; longer chunks from the daemon
        are split, ``None`` yields them as sent.
        """
        _check_chunk_size(chunk_size)
        fields = self._fields(model, {"max_tokens": max_tokens, "temperature": temperature,
                                      **options})
        body = {"prompt": prompt, **fields}
        return self._request("POST", f"{API_PREFIX}/stream", body, stream=True), chunk_size

    def _batch_requests(
        self, prompts: Sequence[str], model: str | None, batch_size: int,
        options: Mapping[str, Any],
    ) -> tuple[list[Request], list[int]]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer")
        fields = self._fields(model, options)
        requests, sizes = [], []
        for start in range(0, len(prompts), batch_size):
            group = list(prompts[start : start + batch_size])
            body = {"prompts": group, **fields}
            requests.append(self._request("POST", f"{API_PREFIX}/batch", body))
            sizes.append(len(group))
        return requests, sizes

    def _batch_settled_call(
        self,
        /,
        prompts: Sequence[str],
        model: str | None = None,
        batch_size: int = 8,
        **options: Unpack[GenerationOptions],
    ) -> Call[list[ProcessResponse | APIError]]:
        """Like :meth:`process_batch`, but a failed item's :class:`APIError` takes its place.

        A failure of a whole group request (HTTP error, connection) still raises.
        """
        requests, sizes = self._batch_requests(prompts, model, batch_size, options)

        def parse(replies: list[Any]) -> list[BatchItem]:
            items: list[BatchItem] = []
            for reply, size in zip(replies, sizes):
                items.extend(_parser(_batch_results(size), "batch")(reply))
            return items

        return Call(requests, parse)

    def _batch_call(
        self,
        /,
        prompts: Sequence[str],
        model: str | None = None,
        batch_size: int = 8,
        **options: Unpack[GenerationOptions],
    ) -> Call[list[ProcessResponse]]:
        """Generate a completion for each prompt (``POST /api/v1/batch``), in order.

        Prompts go in groups of ``batch_size``, one group after another; the
        daemon decodes a group's prompts together. A failed item raises its
        :class:`APIError` (use :meth:`process_batch_settled` to get errors in
        place instead).
        """
        settled = self._batch_settled_call(prompts, model, batch_size, **options)

        def parse(replies: list[Any]) -> list[ProcessResponse]:
            results: list[ProcessResponse] = []
            for item in settled.parse(replies):
                if isinstance(item, APIError):
                    raise item
                results.append(item)
            return results

        return Call(settled.requests, parse)

    def _list_models_call(self, /) -> Call[list[ModelInfo]]:
        """The models the daemon can serve (``GET /api/v1/models``)."""
        return Call.one(self._request("GET", f"{API_PREFIX}/models"), _parser(_models, "models"))

    def _get_model_call(self, /, model_id: str) -> Call[ModelInfo]:
        """One model's details (``GET /api/v1/models/{model_id}``)."""
        if not model_id:
            raise ValueError("model_id must not be empty")
        path = f"{API_PREFIX}/models/{urllib.parse.quote(model_id, safe='')}"
        return Call.one(self._request("GET", path), _parser(ModelInfo.from_dict, "model"))

    def _get_config_call(self, /) -> Call[dict[str, Any]]:
        """The daemon's settings (``GET /api/v1/config``)."""
        request = self._request("GET", f"{API_PREFIX}/config")
        return Call.one(request, _parser(_as_dict, "config"))

    def _update_config_call(self, /, changes: Mapping[str, Any]) -> Call[dict[str, Any]]:
        """Change settings (``POST /api/v1/config``); returns the daemon's whole new config."""
        request = self._request("POST", f"{API_PREFIX}/config", dict(changes))
        return Call.one(request, _parser(_as_dict, "config"))

    def _health_call(self, /) -> Call[dict[str, Any]]:
        """The daemon's health report (``GET /health``)."""
        return Call.one(self._request("GET", "/health"), _parser(_as_dict, "health"))
