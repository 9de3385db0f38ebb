"""The transport-free half of every client: building requests, parsing replies.

``BaseClient`` turns each API operation into a :class:`Call` (a ready
:class:`Request` plus the function that parses the decoded JSON reply) or, for
streams, a :class:`Request` whose NDJSON lines :class:`NDJSONDecoder` and
:func:`parse_stream_line` read. The async client (and a sync one later) only
sends requests and feeds bytes back here, so no method body is written twice.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import _config
from ._version import __version__
from .error import APIError, _error_from_item, error_from_response
from .types import ModelInfo, ProcessResponse, Usage

__all__ = [
    "API_PREFIX",
    "USER_AGENT",
    "BaseClient",
    "Call",
    "NDJSONDecoder",
    "Request",
    "StreamEnd",
    "StreamText",
    "decode_response",
    "parse_stream_line",
    "split_text",
]

USER_AGENT = f"llamahome-python/{__version__}"
API_PREFIX = "/api/v1"
JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"
INVALID_RESPONSE = "invalid_response"

T = TypeVar("T")
BatchItem = ProcessResponse | APIError


def invalid_response(message: str, status: int | None = None) -> APIError:
    """The error for a reply that does not have the documented shape."""
    return APIError(message, INVALID_RESPONSE, status=status)


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
    """A request and the parser for its decoded JSON reply."""

    request: Request
    parse: Callable[[Any], T]


@dataclass(frozen=True)
class StreamText:
    """A ``{"chunk": ..., "index": ...}`` line."""

    text: str
    index: int


@dataclass(frozen=True)
class StreamEnd:
    """The final ``{"done": true, ...}`` line of a stream."""

    usage: Usage | None
    finish_reason: str | None
    model: str | None
    created: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _decode_json(body: bytes, status: int | None) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too.
        raise invalid_response(f"response is not valid JSON: {exc}", status) from exc


def decode_response(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Decode a complete reply's JSON; for 4xx/5xx raise the mapped :class:`APIError`."""
    if status >= 400:
        raise error_from_response(status, body, headers)
    return _decode_json(body, status)


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


class NDJSONDecoder:
    """Incremental newline-delimited JSON decoder.

    Feed it the bytes of a response as they arrive; each call returns the JSON
    objects completed by those bytes. Lines may be split anywhere (inside a
    multi-byte UTF-8 character too), blank lines and ``\\r\\n`` endings are
    accepted, and :meth:`close` returns a last line left without a newline.
    """

    def __init__(self, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._max_line_bytes = max_line_bytes

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        objects: list[dict[str, Any]] = []
        start = 0
        while (newline := self._buffer.find(b"\n", max(start, self._scanned))) >= 0:
            obj = self._parse(bytes(self._buffer[start:newline]))
            if obj is not None:
                objects.append(obj)
            start = newline + 1
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        if self._scanned > self._max_line_bytes:
            raise invalid_response(f"stream line longer than {self._max_line_bytes} bytes")
        return objects

    def close(self) -> list[dict[str, Any]]:
        rest, self._buffer, self._scanned = bytes(self._buffer), bytearray(), 0
        obj = self._parse(rest)
        return [] if obj is None else [obj]

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | None:
        line = line.strip()
        if not line:
            return None
        obj = _decode_json(line, None)
        if not isinstance(obj, dict):
            raise invalid_response(f"stream line is not a JSON object: {line[:100]!r}")
        return obj


def parse_stream_line(obj: Mapping[str, Any]) -> StreamText | StreamEnd | None:
    """Classify one NDJSON line; raise the mapped error for an ``error`` line.

    Returns ``None`` for lines this client does not know (ignored, for
    forward compatibility).
    """
    if "error" in obj:
        raise _error_from_item(obj["error"])
    if obj.get("done") is True:
        try:
            usage = Usage.from_dict(obj["usage"]) if obj.get("usage") is not None else None
        except ValueError as exc:
            raise invalid_response(f"unexpected final stream line: {exc}") from exc
        return StreamEnd(
            usage=usage,
            finish_reason=_opt_text(obj.get("finish_reason")),
            model=_opt_text(obj.get("model")),
            created=_opt_text(obj.get("created")),
            raw=dict(obj),
        )
    chunk = obj.get("chunk")
    if isinstance(chunk, str):
        index = obj.get("index")
        return StreamText(chunk, index if isinstance(index, int) else -1)
    return None


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def split_text(text: str, chunk_size: int | None) -> list[str]:
    """Cut ``text`` into pieces of at most ``chunk_size`` characters."""
    if chunk_size is None:
        return [text]
    return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError("chunk_size must be a positive number of characters, or None")


class BaseClient:
    """Configuration plus one request builder per API operation.

    ``api_key`` and ``endpoint`` default to what :mod:`llamahome._config`
    finds (environment, then the daemon's state directory). ``timeout`` is in
    seconds: the whole request for ordinary calls; for streams, the connection
    and each wait between two reads.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        timeout: float = 600.0,
    ) -> None:
        endpoint = (endpoint or _config.default_endpoint()).rstrip("/")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.api_key: str | None = api_key if api_key is not None else _config.default_api_key()
        self.endpoint: str = endpoint
        self.timeout: float = float(timeout)

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
    def _generation_fields(
        model: str | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        top_k: int | None,
        stop: str | Sequence[str] | None,
        seed: int | None,
        repeat_penalty: float | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "stop": stop if stop is None or isinstance(stop, str) else list(stop),
            "seed": seed,
            "repeat_penalty": repeat_penalty,
            **extra,
        }
        return drop_none(fields)

    def _process_call(self, prompt: str, fields: Mapping[str, Any]) -> Call[ProcessResponse]:
        request = self._request("POST", f"{API_PREFIX}/process", {"prompt": prompt, **fields})
        return Call(request, _parser(ProcessResponse.from_dict, "process"))

    def _stream_request(
        self, prompt: str, chunk_size: int | None, fields: Mapping[str, Any]
    ) -> Request:
        _check_chunk_size(chunk_size)
        return self._request(
            "POST", f"{API_PREFIX}/stream", {"prompt": prompt, **fields}, stream=True
        )

    def _batch_calls(
        self, prompts: Sequence[str], batch_size: int, fields: Mapping[str, Any]
    ) -> list[Call[list[BatchItem]]]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer")
        calls = []
        for start in range(0, len(prompts), batch_size):
            group = list(prompts[start : start + batch_size])
            request = self._request("POST", f"{API_PREFIX}/batch", {"prompts": group, **fields})
            calls.append(Call(request, _parser(_batch_results(len(group)), "batch")))
        return calls

    def _list_models_call(self) -> Call[list[ModelInfo]]:
        return Call(self._request("GET", f"{API_PREFIX}/models"), _parser(_models, "models"))

    def _get_model_call(self, model_id: str) -> Call[ModelInfo]:
        if not model_id:
            raise ValueError("model_id must not be empty")
        path = f"{API_PREFIX}/models/{urllib.parse.quote(model_id, safe='')}"
        return Call(self._request("GET", path), _parser(ModelInfo.from_dict, "model"))

    def _get_config_call(self) -> Call[dict[str, Any]]:
        return Call(self._request("GET", f"{API_PREFIX}/config"), _parser(_as_dict, "config"))

    def _update_config_call(self, changes: Mapping[str, Any]) -> Call[dict[str, Any]]:
        request = self._request("POST", f"{API_PREFIX}/config", dict(changes))
        return Call(request, _parser(_as_dict, "config"))

    def _health_call(self) -> Call[dict[str, Any]]:
        return Call(self._request("GET", "/health"), _parser(_as_dict, "health"))
