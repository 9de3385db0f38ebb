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
the sequence at the worker's next step. A request for ``n`` choices is ``n`` generations
(siblings sharing the prompt): :func:`merged_events` reads them as one stream, :func:`results`
runs them to the end, :func:`request_usage` counts the shared prompt once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
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
    logprobs: list[dict[str, Any]] | None = None
    """OpenAI's ``{token, logprob, bytes, top_logprobs}`` of the tokens this text ends, when
    the request asked for logprobs."""


@dataclass(frozen=True)
class Finished:
    """How a sequence ended, with everything the dialects report about it."""

    model: str
    created: str
    finish_reason: str
    usage: dict[str, int]
    cache: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None
    durations: dict[str, float] | None = None
    """Milliseconds: ``total`` (from the request's start), ``load`` (getting the model loaded),
    ``queue``, ``prefill`` and ``decode`` (Ollama's nanosecond fields are made from these)."""
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
    logprobs: list[dict[str, Any]] | None = None  # every token's, when asked for

    def native(self) -> dict[str, Any]:
        data = {"text": self.text, **self.finished.summary()}
        if self.logprobs is not None:
            data["logprobs"] = self.logprobs
        return data


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
    counts_prompt: bool = True
    """Whether ``meter`` is charged for the prompt: False for the siblings of ``n`` choices
    after the first, which share its prompt (decoded once)."""

    async def events(self) -> AsyncIterator[Event]:
        """Text deltas, then one ``Finished`` or ``Errored``; cancels the sequence if left early."""
        try:
            async for event in self.stream.events():
                if isinstance(event, Text):
                    yield Delta(event.text, event.tokens, event.logprobs)
                elif isinstance(event, Done):
                    yield self._finished(event)
                elif isinstance(event, Failed):
                    yield Errored(failure(event))
        finally:
            await self.close()

    async def result(self) -> Result:
        """Run to the end: the whole text and how it ended; raises the sequence's error."""
        parts: list[str] = []
        logprobs: list[dict[str, Any]] | None = None
        async for event in self.events():
            if isinstance(event, Delta):
                parts.append(event.text)
                if event.logprobs is not None:
                    logprobs = (logprobs or []) + event.logprobs
            elif isinstance(event, Errored):
                raise event.error
            else:
                return Result("".join(parts), event, logprobs)
        raise LlamaHomeError("the sequence ended without a result")

    def _finished(self, done: Done) -> Finished:
        trace = self.account(self, done)
        tokens = (done.total_tokens if self.counts_prompt
                  else int(done.usage.get("completion_tokens", 0)))
        if self.meter is not None and tokens > 0:
            self.meter(tokens)
        return Finished(self.entry.id, self.created, done.finish_reason, done.usage, done.cache,
                        trace, self._durations(done), done.stop_sequence)

    def _durations(self, done: Done) -> dict[str, float]:
        phases = self.trace.phases
        return {"total": round((time.perf_counter() - self.trace.started) * 1000, 3),
                "load": float(phases.get("load", 0.0)),
                "queue": self.stream.queue_ms(done),
                "prefill": float(done.timings.get("prefill_ms", 0.0)),
                "decode": float(done.timings.get("decode_ms", 0.0))}

    async def stop(self) -> None:
        """Ask the worker to stop this sequence; it still ends with ``finish_reason: cancelled``."""
        if not self.stream.finished:
            await self.stream.worker.cancel(self.stream.seq_id)

    async def close(self) -> None:
        """Stop reading: the sequence ends at the worker's next step (no-op once finished)."""
        await self.stream.cancel()


async def merged_events(
        generations: Sequence[Generation]) -> AsyncGenerator[tuple[int, Event], None]:
    """The events of several generations (``n`` choices) as they come, each with the index of
    its generation; every generation's events end with its ``Finished`` or ``Errored``.
    Leaving early (or a failure) stops every generation still running."""
    if len(generations) == 1:  # no tasks for the common case
        async for event in generations[0].events():
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def pump(index: int, generation: Generation) -> None:
        try:
            async for event in generation.events():
                await queue.put((index, event))
        except Exception as exc:  # noqa: BLE001 - ends this choice, never hangs the others
            await queue.put((index, Errored(LlamaHomeError(f"the sequence failed: {exc}"))))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
    try:
        remaining = len(generations)
        while remaining:
            index, event = await queue.get()
            if not isinstance(event, Delta):
                remaining -= 1
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for generation in generations:
            await generation.close()


async def results(generations: Sequence[Generation]) -> list[Result]:
    """Every generation run to its end, in order; the first error is raised and stops the
    others (none is left running unread)."""
    try:
        return list(await asyncio.gather(*(g.result() for g in generations)))
    except BaseException:
        for generation in generations:
            await generation.close()
        raise


def request_usage(generations: Sequence[Generation],
                  usages: Sequence[dict[str, int]]) -> dict[str, int]:
    """The usage of a request's generations as OpenAI reports ``n`` choices: each prompt once
    (siblings share it, and it was decoded once), the completions summed."""
    prompt = sum(int(u.get("prompt_tokens", 0))
                 for g, u in zip(generations, usages) if g.counts_prompt)
    completion = sum(int(u.get("completion_tokens", 0)) for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
