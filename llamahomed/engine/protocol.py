"""The daemon <-> worker protocol: length-prefixed JSON frames over a socketpair.

Daemon -> worker ("op"):
    {"op": "submit", "seq": 7, "prompt": "...", "params": {...SamplingParams...},
     "request_id": "..."}                        (optional; echoed on the sequence's last event)
        optional "special": true: the prompt may spell special tokens (a rendered chat template)
        instead of "prompt", "tokens": [1, 2, 3]: the prompt as token ids, decoded as given
        optional "siblings": [8, 9]: more sequence ids for the same prompt (``n`` choices), each
        with its own events; they share the prompt's KV (batched engine), and with a seed in
        params sibling i samples with seed + i
    {"op": "cancel", "seq": 7}
    {"op": "embed", "seq": 8, "inputs": ["text" or [token id, ...], ...]}
        answered by one done (or error) event with "embeddings": [[float, ...], ...]
    {"op": "tokenize", "seq": 9, "content": "text", "add_special": false,
     "parse_special": true, "with_pieces": false}       answered by one tokens (or error) event
    {"op": "detokenize", "seq": 10, "tokens": [1, 2, 3]} answered by one tokens (or error) event
    {"op": "shutdown"}

Worker -> daemon ("ev"):
    {"ev": "ready", "info": {"n_ctx": ..., "n_ctx_train": ..., "load_ms": ..., ...}}
    {"ev": "load_failed", "message": "..."}
    {"ev": "step", "events": [event, ...]}      one frame per decode step, any number of sequences
     (+ "kv_usage": 0.25 when it changed: share of the KV cache held by running sequences,
      batched engine only)

Sequence events inside a step (each names its "seq"):
    {"seq": 7, "kind": "accepted", "prompt_tokens": 12}
    {"seq": 7, "kind": "text", "text": "Hello", "tokens": 1}
    {"seq": 7, "kind": "done", "finish_reason": "stop"|"length"|"cancelled",
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}, "timings": {...}}
     (+ "stop_sequence": "..." when a stop string ended it)
    {"seq": 7, "kind": "error", "code": "context_length_exceeded", "message": "...", "details": {}}
    done and error events also carry "request_id" when the submit had one.
    {"seq": 9, "kind": "tokens", "tokens": [1, 2], "pieces": ["He", "llo"]}   (tokenize; pieces
     only when asked: a string, or a list of byte values where a piece is not whole UTF-8)
    {"seq": 10, "kind": "tokens", "content": "Hello"}                         (detokenize)

Many sequences may be in flight at once; the worker decides how to schedule them.

Both sides speak through the typed events below: the worker builds them and sends ``wire()``,
the daemon reads each with :func:`parse_event`. Nothing else spells a sequence event by hand.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Union

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 2**20


class ProtocolError(Exception):
    """A frame that cannot be read (the other side died or sent garbage)."""


Prompt = Union[str, list[int]]  # text (tokenized in the worker) or token ids, used as given


@dataclass(frozen=True)
class SamplingParams:
    """What a sequence asks of the sampler and the stop rules."""

    max_tokens: int = 100
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = field(default_factory=tuple)  # (token id, bias)
    grammar: str = ""  # GBNF (root rule "root"); "" = unconstrained
    logprobs: bool = False  # each token's log probability on its text event
    top_logprobs: int = 0  # and this many most likely alternatives (0..20)

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["logit_bias"] = [list(pair) for pair in self.logit_bias]
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SamplingParams:
        bias = tuple((int(token), float(value)) for token, value in data.get("logit_bias") or ())
        return cls(**{**data, "stop": tuple(data.get("stop") or ()), "logit_bias": bias})


@dataclass(frozen=True, slots=True)
class Accepted:
    """The worker took the prompt (it fits the context); decoding follows."""

    seq: int
    prompt_tokens: int

    def wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": "accepted", "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True, slots=True)
class Text:
    """Text safe to show (whole UTF-8 characters, no partial stop string); ``tokens`` decoded."""

    seq: int
    text: str
    tokens: int = 1
    # OpenAI's {token, logprob, bytes, top_logprobs} of the tokens this text ends (when asked)
    logprobs: list[dict[str, Any]] | None = None

    def wire(self) -> dict[str, Any]:
        data = {"seq": self.seq, "kind": "text", "text": self.text, "tokens": self.tokens}
        if self.logprobs is not None:
            data["logprobs"] = self.logprobs
        return data


@dataclass(frozen=True, slots=True)
class Done:
    """The sequence ended: why, its usage, timings in ms, prompt-cache use, or embeddings."""

    seq: int
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] | None = None
    embeddings: list[list[float]] | None = None
    request_id: str = ""
    stop_sequence: str | None = None
    """The stop string that ended the sequence (``finish_reason`` "stop" by a stop string, not
    the model's end-of-generation token)."""

    def wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "kind": "done", "finish_reason": self.finish_reason,
                                "usage": self.usage, "timings": self.timings}
        if self.cache is not None:
            data["cache"] = self.cache
        if self.embeddings is not None:
            data["embeddings"] = self.embeddings
        if self.request_id:
            data["request_id"] = self.request_id
        if self.stop_sequence is not None:
            data["stop_sequence"] = self.stop_sequence
        return data

    @property
    def total_tokens(self) -> int:
        return int(self.usage.get("total_tokens", 0))


@dataclass(frozen=True, slots=True)
class Failed:
    """The sequence failed with an error code of the daemon's one code table."""

    seq: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    def wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "kind": "error", "code": self.code,
                                "message": self.message, "details": self.details}
        if self.request_id:
            data["request_id"] = self.request_id
        return data


@dataclass(frozen=True, slots=True)
class Tokens:
    """The answer to a tokenize (``tokens``, ``pieces`` when asked) or detokenize (``content``)."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    pieces: list[str | list[int]] | None = None
    content: str | None = None

    def wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "kind": "tokens", "tokens": self.tokens}
        if self.pieces is not None:
            data["pieces"] = self.pieces
        if self.content is not None:
            data["content"] = self.content
        return data


SeqEvent = Union[Accepted, Text, Done, Failed, Tokens]
FINAL_KINDS = frozenset({"done", "error", "tokens"})


def empty_usage(prompt_tokens: int = 0, completion_tokens: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def parse_event(data: dict[str, Any]) -> SeqEvent:
    """A worker's event dict as its typed event (ProtocolError for an unknown kind)."""
    kind, seq = data.get("kind"), int(data.get("seq", -1))
    if kind == "text":
        logprobs = data.get("logprobs")
        return Text(seq, str(data.get("text", "")), int(data.get("tokens", 0)),
                    list(logprobs) if isinstance(logprobs, list) else None)
    if kind == "done":
        return Done(seq, str(data.get("finish_reason") or "stop"),
                    dict(data.get("usage") or empty_usage()), dict(data.get("timings") or {}),
                    data.get("cache"), data.get("embeddings"), str(data.get("request_id", "")),
                    None if data.get("stop_sequence") is None else str(data["stop_sequence"]))
    if kind == "error":
        return Failed(seq, str(data.get("code") or "internal_error"),
                      str(data.get("message") or "error"), dict(data.get("details") or {}),
                      str(data.get("request_id", "")))
    if kind == "accepted":
        return Accepted(seq, int(data.get("prompt_tokens", 0)))
    if kind == "tokens":
        content = data.get("content")
        return Tokens(seq, [int(t) for t in data.get("tokens") or ()], data.get("pieces"),
                      None if content is None else str(content))
    raise ProtocolError(f"unknown sequence event kind {kind!r}")


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes is over the {MAX_FRAME} byte limit")
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"bad frame: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("bad frame: not an object")
    return message


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking read of one frame (worker side). None at a clean end of stream."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} over the limit")
    body = _recv_exact(sock, length)
    if body is None:
        raise ProtocolError("end of stream inside a frame")
    return decode_body(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(n - len(chunks))
        if not data:
            if chunks:
                raise ProtocolError("end of stream inside a frame")
            return None
        chunks += data
    return bytes(chunks)
