"""An incremental tool-call parser: text deltas in, content pieces and whole calls out.

Text is held back only while it may still become a call: a tail that could be the start of a
marker (``<tool_c``), a call whose closing tag has not come yet, an answer that opened with
``{``, ``[`` or a fence (it may be a whole-answer JSON call, so it is judged at the end), and
whitespace (which between or after calls is dropped). Everything else streams at once. A call
is yielded as soon as it is complete (a Hermes call at its closing tag; the formats that run to
the end of the answer, at the end). What turns out not to be a call is yielded as content, in
order, so nothing the model wrote is lost.

:func:`parse_text` runs the same parser over a whole answer, so streamed and whole answers
split alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from llamahomed.service.tools.parse import (
    Marker,
    calls_in_segment,
    find_marker,
    may_open_whole_json,
    partial_marker,
    whole_json_calls,
)
from llamahomed.service.tools.types import Parsed, ToolCall


@dataclass(frozen=True, slots=True)
class Content:
    text: str


@dataclass(frozen=True, slots=True)
class Call:
    index: int
    call: ToolCall


Piece = Union[Content, Call]


class ToolStream:
    """Feed text with :meth:`feed`, then call :meth:`finish` once; each returns the pieces that
    became certain. ``names``: the tools a call may name."""

    def __init__(self, names: frozenset[str] | set[str] | list[str]) -> None:
        self._names = frozenset(names)
        self._buffer = ""
        self._marker: Marker | None = None  # inside a call opened by this marker
        self._started = False  # some non-whitespace has been seen
        self._whole = False  # the answer opened like JSON: judged at the end
        self._space = ""  # whitespace held back
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        pieces: list[Piece] = []
        if not self._started:
            stripped = self._buffer.lstrip()
            if not stripped:
                return pieces
            self._started = True
            self._whole = may_open_whole_json(stripped)
        if self._whole:
            return pieces
        while True:
            if self._marker is not None:
                if not self._close_call(pieces):
                    return pieces
                continue
            found = find_marker(self._buffer)
            if found is not None:
                start, marker = found
                self._content(self._buffer[:start], pieces)
                self._buffer = self._buffer[start + len(marker.open):]
                self._marker = marker
                continue
            keep = partial_marker(self._buffer)
            ready = self._buffer[:len(self._buffer) - keep]
            self._buffer = self._buffer[len(ready):]
            self._content(ready, pieces)
            return pieces

    def _close_call(self, pieces: list[Piece]) -> bool:
        """Inside a call: emit it once its closing tag came; whether the buffer moved on."""
        marker = self._marker
        assert marker is not None
        if marker.close is None or marker.close not in self._buffer:
            return False
        body, _, rest = self._buffer.partition(marker.close)
        self._segment(marker, body, marker.close, pieces)
        self._buffer, self._marker = rest, None
        return True

    def _segment(self, marker: Marker, body: str, close: str, pieces: list[Piece]) -> None:
        calls = calls_in_segment(body, self._names)
        if calls is None:  # not a call after all: the model's text, as it wrote it
            self._content(marker.open + body + close, pieces)
            return
        self._space = ""
        for call in calls:
            pieces.append(Call(len(self.calls), call))
            self.calls.append(call)

    def _content(self, text: str, pieces: list[Piece]) -> None:
        """Text that is not a call. Trailing whitespace waits for what follows: more text gets
        it, a call drops it (so a split never depends on how the text was chunked)."""
        body = text.rstrip()
        if not body:
            self._space += text
            return
        pieces.append(Content(self._space + body))
        self._space = text[len(body):]

    def finish(self) -> list[Piece]:
        """The end of the answer: whatever was held back, as calls or content."""
        pieces: list[Piece] = []
        if self._whole:
            text, self._buffer = self._buffer, ""
            calls = whole_json_calls(text, self._names)
            if calls is not None:
                for call in calls:
                    pieces.append(Call(len(self.calls), call))
                    self.calls.append(call)
                return pieces
            self._whole = False  # not a whole-answer call: look for marked calls in it
            pieces = self.feed(text)
        text, self._buffer = self._buffer, ""
        if self._marker is not None:  # a call still open at the end (no closing tag)
            marker, self._marker = self._marker, None
            body = text
            if marker.close:
                cut = partial_marker_of(body, marker.close)
                body = body[:len(body) - cut]
            self._segment(marker, body, text[len(body):], pieces)
        else:
            self._content(text, pieces)
        if self._space and not self.calls:  # a plain answer's trailing whitespace
            pieces.append(Content(self._space))
        self._space = ""
        return pieces


def partial_marker_of(text: str, tag: str) -> int:
    """How many trailing characters of ``text`` are the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def parse_text(text: str, names: frozenset[str] | set[str] | list[str]) -> Parsed:
    """A whole answer split into content and calls, as :class:`ToolStream` splits it."""
    stream = ToolStream(names)
    pieces = stream.feed(text) + stream.finish()
    content = "".join(p.text for p in pieces if isinstance(p, Content))
    return Parsed(content, tuple(stream.calls))
