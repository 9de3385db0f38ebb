"""What every engine shares on the reader-thread side: prompt checks, the queue, cancel, stop."""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from llamahomed.engine.protocol import Accepted, Failed, SamplingParams
from llamahomed.engine.worker.detok import TextOutput

Event = dict[str, Any]
Emit = Callable[[list[Event]], None]


@dataclass(eq=False)
class SequenceState:
    """What every engine tracks for a sequence: prompt, progress, clock, output text."""

    seq_id: int
    tokens: list[int]
    params: SamplingParams
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    first_token: float = 0.0
    generated: int = 0
    out: TextOutput = field(default_factory=lambda: TextOutput(()))

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": len(self.tokens), "completion_tokens": self.generated,
                "total_tokens": len(self.tokens) + self.generated}

    def timings(self) -> dict[str, float]:
        now = time.perf_counter()
        started = self.started or now
        first = self.first_token or now
        return {"queue_ms": round((started - self.submitted) * 1000, 2),
                "prefill_ms": round((first - started) * 1000, 2),
                "decode_ms": round((now - first) * 1000, 2)}


Seq = TypeVar("Seq", bound=SequenceState)


def tokenize(lib: Any, vocab: Any, text: str, special: bool = False, *,
             add_special: bool = True) -> list[int]:
    """llama.cpp's tokens for ``text``, BOS added as the vocab wants (unless ``add_special`` is
    off), special tokens parsed only when asked (a rendered chat template; never a user's
    prompt)."""
    data = text.encode("utf-8")
    size = len(data) + 8
    buffer = (ctypes.c_int32 * size)()
    n = lib.llama_tokenize(vocab, data, len(data), buffer, size, add_special, special)
    if n < 0:  # the buffer was too small: -n is the size needed
        size = -n
        buffer = (ctypes.c_int32 * size)()
        n = lib.llama_tokenize(vocab, data, len(data), buffer, size, add_special, special)
    return list(buffer[:n])


def special_tokens(lib: Any, vocab: Any) -> dict[str, Any]:
    """BOS/EOS texts and whether tokenizing adds BOS: what a chat template needs to be rendered."""

    def text(token: int) -> str:
        return "" if token < 0 else bytes(lib.llama_vocab_get_text(vocab, token)).decode("utf-8", "replace")

    return {"bos_token": text(int(lib.llama_vocab_bos(vocab))),
            "eos_token": text(int(lib.llama_vocab_eos(vocab))),
            "add_bos": bool(lib.llama_vocab_get_add_bos(vocab))}


def sibling_params(params: SamplingParams, index: int) -> SamplingParams:
    """Sibling ``index``'s params (``n`` choices of one prompt): with a seed, sibling i samples
    with seed + i, so the choices are reproducible yet differ; without, each draws its own."""
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=params.seed + index)


def context_error(seq_id: int, prompt_tokens: int, n_ctx: int) -> Event:
    """The ``context_length_exceeded`` event: refused, never truncated."""
    return Failed(seq_id, "context_length_exceeded",
                  f"the prompt has {prompt_tokens} tokens; this model is loaded with a "
                  f"context of {n_ctx} tokens, which must also hold at least one generated token",
                  {"prompt_tokens": prompt_tokens, "context_length": n_ctx}).wire()


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
        self._accept_group([seq_id], tokens, n_ctx, lambda: [make()])

    def _accept_group(self, ids: Sequence[int], tokens: list[int], n_ctx: int,
                      make: Callable[[], list[Seq]]) -> None:
        """``_accept`` for sequences of one prompt (siblings), queued together in order."""
        if len(tokens) >= n_ctx:
            self._emit([context_error(i, len(tokens), n_ctx) for i in ids])
            return
        group = make()
        self._emit([Accepted(i, len(tokens)).wire() for i in ids])
        with self._cond:
            self._queue.extend(group)
            self._cond.notify()

    def cancel(self, seq_id: int) -> None:
        with self._cond:
            self._cancelled.add(seq_id)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
