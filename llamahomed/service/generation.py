"""One generation: a sequence the worker accepted, read as typed events, accounted for once.

Every dialect consumes a generation the same way: iterate :meth:`Generation.events` and render
each event in its own words (``http/render/``), or call :meth:`Generation.result` for a whole
answer. The events are

    Delta(text)                text safe to show
    Finished(...)              the last event of a sequence that ended (stop, length, cancelled)
    Errored(error)             the last event of a sequence that failed (a LlamaHomeError)

and the bookkeeping a finished sequence needs (speed measurements, the trace, the request's log
line, the token budget of the caller's tier) happens here, exactly once, before ``Finished`` is
yielded. Leaving the iteration early (a client that went away, a renderer that raised) cancels
the sequence at the worker's next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Union

from llamahome.monitoring import Trace

from llamahomed.core.errors import LlamaHomeError, error_for_code
from llamahomed.engine.handle import SequenceStream
from llamahomed.engine.protocol import Done, Failed, Text
from llamahomed.registry.store import ModelEntry

Meter = Callable[[int], None]
"""Called with a finished sequence's total tokens (the caller's tokens-per-minute budget)."""


@dataclass(frozen=True, slots=True)
class Delta:
    text: str
    tokens: int = 1
    """Tokens decoded for this text (0 for text held back until the end)."""


@dataclass(frozen=True)
class Finished:
    """How a sequence ended, with everything the dialects report about it."""

    model: str
    created: str
    finish_reason: str
    usage: dict[str, int]
    cache: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None
    stop_sequence: str | None = None
    """The stop string that ended the sequence, when one did (Anthropic's ``stop_sequence``)."""

    def summary(self) -> dict[str, Any]:
        """LlamaHome's fields for a finished sequence (the process response, the last line)."""
        data: dict[str, Any] = {"usage": self.usage, "finish_reason": self.finish_reason,
                                "model": self.model, "created": self.created}
        if self.cache is not None:  # prompt-cache hits: prompt tokens whose KV was reused
            data["cache"] = self.cache
        if self.trace is not None:  # with the tracing setting: request id and phases in ms
            data["trace"] = self.trace
        return data


@dataclass(frozen=True, slots=True)
class Errored:
    error: LlamaHomeError


Event = Union[Delta, Finished, Errored]


@dataclass(frozen=True)
class Result:
    """A whole answer: its text and how it ended."""

    text: str
    finished: Finished

    def native(self) -> dict[str, Any]:
        return {"text": self.text, **self.finished.summary()}


def failure(event: Failed) -> LlamaHomeError:
    """The daemon-side exception for a worker's error event."""
    return error_for_code(event.code, event.message, event.details)


@dataclass
class Generation:
    """A submitted sequence whose prompt the worker accepted."""

    entry: ModelEntry
    stream: SequenceStream
    prompt_tokens: int
    created: str
    trace: Trace
    account: Callable[[Generation, Done], dict[str, Any] | None]
    """The service's bookkeeping for a ``done`` event; returns the trace to report, if any."""
    meter: Meter | None = None

    async def events(self) -> AsyncIterator[Event]:
        """Text deltas, then one ``Finished`` or ``Errored``; cancels the sequence if left early."""
        try:
            async for event in self.stream.events():
                if isinstance(event, Text):
                    yield Delta(event.text, event.tokens)
                elif isinstance(event, Done):
                    yield self._finished(event)
                elif isinstance(event, Failed):
                    yield Errored(failure(event))
        finally:
            await self.close()

    async def result(self) -> Result:
        """Run to the end: the whole text and how it ended; raises the sequence's error."""
        parts: list[str] = []
        async for event in self.events():
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Errored):
                raise event.error
            else:
                return Result("".join(parts), event)
        raise LlamaHomeError("the sequence ended without a result")

    def _finished(self, done: Done) -> Finished:
        trace = self.account(self, done)
        if self.meter is not None and done.total_tokens > 0:
            self.meter(done.total_tokens)
        return Finished(self.entry.id, self.created, done.finish_reason, done.usage, done.cache,
                        trace, done.stop_sequence)

    async def stop(self) -> None:
        """Ask the worker to stop this sequence; it still ends with ``finish_reason: cancelled``."""
        if not self.stream.finished:
            await self.stream.worker.cancel(self.stream.seq_id)

    async def close(self) -> None:
        """Stop reading: the sequence ends at the worker's next step (no-op once finished)."""
        await self.stream.cancel()
