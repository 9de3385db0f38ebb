"""One request's context, shared by the middleware that logs it and the service that fills it.

The metrics middleware opens a :class:`RequestContext` for each request (a ``ContextVar``, so
tasks the handler starts, such as a batch's sequences, see the same object); the inference
service adds the model, token counts and the trace of each sequence; the middleware's summary
line reads them back. Nothing here holds a prompt or a completion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_CURRENT: ContextVar[RequestContext | None] = ContextVar("llamahome_request", default=None)


@dataclass
class RequestContext:
    request_id: str
    models: list[str] = field(default_factory=list)
    sequences: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace: dict[str, Any] | None = None  # the last sequence's phases, when tracing is on

    def add_sequence(self, model: str, usage: dict[str, Any], trace: dict[str, Any] | None) -> None:
        if model not in self.models:
            self.models.append(model)
        self.sequences += 1
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))
        if trace is not None:
            self.trace = trace

    def log_fields(self) -> dict[str, Any]:
        if not self.sequences:
            return {}
        fields: dict[str, Any] = {"model": ",".join(self.models),
                                  "prompt_tokens": self.prompt_tokens,
                                  "completion_tokens": self.completion_tokens}
        if self.sequences > 1:
            fields["sequences"] = self.sequences
        if self.trace is not None:
            fields["phases"] = {k: v for k, v in self.trace.items() if k.endswith("_ms")}
        return fields


def current() -> RequestContext | None:
    """The context of the request being handled, if any."""
    return _CURRENT.get()


@contextmanager
def request_context(request_id: str) -> Iterator[RequestContext]:
    context = RequestContext(request_id)
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
