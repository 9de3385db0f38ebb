"""Reading the daemon's replies: JSON bodies, error responses, and NDJSON streams.

No I/O here: the clients feed bytes in. :func:`decode_response` turns a complete reply into JSON
or raises its mapped :class:`~llamahome.error.APIError`; :class:`StreamParser` turns a stream's
bytes, as they arrive, into :class:`~llamahome.types.StreamChunk` objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._envelope import _error_from_item
from .error import APIConnectionError, APIError, error_from_response
from .types import StreamChunk, Usage

__all__ = [
    "NDJSONDecoder",
    "StreamEnd",
    "StreamInfo",
    "StreamParser",
    "StreamText",
    "decode_response",
    "invalid_response",
    "parse_stream_line",
    "split_text",
]

INVALID_RESPONSE = "invalid_response"


def invalid_response(message: str, status: int | None = None) -> APIError:
    """The error for a reply that does not have the documented shape."""
    return APIError(message, INVALID_RESPONSE, status=status)


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


class StreamParser:
    """Turns the bytes of a ``/api/v1/stream`` reply into :class:`StreamChunk` objects.

    :meth:`feed` takes the bytes as they arrive, ``b""`` meaning the body
    ended; an ``error`` line raises its mapped :class:`APIError`, and a body
    that ends before the final ``{"done": true}`` line raises
    :class:`~llamahome.error.APIConnectionError`. ``end`` holds the final line.
    """

    def __init__(self, chunk_size: int | None) -> None:
        self._decoder = NDJSONDecoder()
        self._chunk_size = chunk_size
        self._index = 0
        self._error: APIError | None = None
        self.end: StreamEnd | None = None

    def feed(self, data: bytes) -> list[StreamChunk]:
        if self._error is not None:
            raise self._error
        chunks: list[StreamChunk] = []
        for line in self._decoder.feed(data) if data else self._decoder.close():
            try:
                event = parse_stream_line(line)
            except APIError as exc:
                if not chunks:
                    raise
                self._error = exc  # raised on the next feed, after the text before it
                return chunks
            if isinstance(event, StreamEnd):
                self.end = event
                return chunks
            if event is None:
                continue
            for text in split_text(event.text, self._chunk_size):
                chunks.append(StreamChunk(text, self._index))
                self._index += 1
        if not data:
            raise APIConnectionError("the stream ended before its final line")
        return chunks


class StreamInfo:
    """What a finished stream reports; ``None`` until its final line arrived."""

    def __init__(self, parser: StreamParser) -> None:
        self._parser = parser

    @property
    def usage(self) -> Usage | None:
        return self._parser.end.usage if self._parser.end else None

    @property
    def finish_reason(self) -> str | None:
        return self._parser.end.finish_reason if self._parser.end else None

    @property
    def model(self) -> str | None:
        return self._parser.end.model if self._parser.end else None

    @property
    def created(self) -> str | None:
        return self._parser.end.created if self._parser.end else None
