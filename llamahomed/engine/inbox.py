"""What every engine shares on the reader-thread side: prompt checks, the queue, cancel, stop."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Event = dict[str, Any]
Emit = Callable[[list[Event]], None]
Seq = TypeVar("Seq")


def context_error(seq_id: int, prompt_tokens: int, n_ctx: int) -> Event:
    """The ``context_length_exceeded`` event: refused, never truncated."""
    return {"seq": seq_id, "kind": "error", "code": "context_length_exceeded",
            "message": f"the prompt has {prompt_tokens} tokens; this model is loaded with a "
                       f"context of {n_ctx} tokens, which must also hold at least one "
                       "generated token",
            "details": {"prompt_tokens": prompt_tokens, "context_length": n_ctx}}


class Inbox(Generic[Seq]):
    """Submitted sequences and cancel/stop requests, handed to the decode thread under a lock."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._queue: collections.deque[Seq] = collections.deque()
        self._cancelled: set[int] = set()
        self._cond = threading.Condition()
        self._stopping = False

    def _accept(self, seq_id: int, tokens: list[int], n_ctx: int,
                make: Callable[[], Seq]) -> None:
        """Refuse a prompt that leaves no room to generate; else acknowledge and queue it."""
        if len(tokens) >= n_ctx:
            self._emit([context_error(seq_id, len(tokens), n_ctx)])
            return
        seq = make()
        self._emit([{"seq": seq_id, "kind": "accepted", "prompt_tokens": len(tokens)}])
        with self._cond:
            self._queue.append(seq)
            self._cond.notify()

    def cancel(self, seq_id: int) -> None:
        with self._cond:
            self._cancelled.add(seq_id)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
