"""Incremental detokenizing and stop strings: text pieces that are always whole characters."""

from __future__ import annotations

import codecs


class IncrementalText:
    """Turns each token's bytes into text, holding back an unfinished UTF-8 sequence.

    A multibyte character split over several byte-fallback tokens comes out only when its last
    byte arrived, so no chunk ever carries half a character.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop strings in streamed text without ever emitting a part of one.

    ``push`` returns the text that is safe to send now and whether a stop string was hit
    (the stop string itself and everything after it are dropped); ``matched`` is then the stop
    string that was hit (the earliest in the text; Anthropic's ``stop_sequence`` names it).
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched: str | None = None

    def push(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [(i, stop) for stop, i in ((s, buffer.find(s)) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            at, self.matched = min(hits, key=lambda hit: hit[0])
            return buffer[:at], True
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that starts some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best


class TextOutput:
    """One sequence's output text: whole UTF-8 characters, with stop strings held back."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._text = IncrementalText()
        self._stops = StopMatcher(stops)

    def feed(self, piece: bytes) -> tuple[str, bool]:
        """Text that is safe to send for this token's bytes, and whether a stop string was hit."""
        text = self._text.feed(piece)
        return self._stops.push(text) if text else ("", False)

    @property
    def matched(self) -> str | None:
        """The stop string that ended the sequence, if one did."""
        return self._stops.matched

    def flush(self) -> str:
        """Everything held back, at the end of the sequence (up to a stop string in it)."""
        tail, _ = self._stops.push(self._text.flush())
        return tail + self._stops.flush()
