"""The daemon <-> worker protocol: length-prefixed JSON frames over a socketpair.

Daemon -> worker ("op"):
    {"op": "submit", "seq": 7, "prompt": "...", "params": {...SamplingParams...},
     "request_id": "..."}                        (optional; echoed on the sequence's last event)
        optional "special": true: the prompt may spell special tokens (a rendered chat template)
    {"op": "cancel", "seq": 7}
    {"op": "embed", "seq": 8, "inputs": ["text", ...]}   answered by one done (or error) event
                                                        with "embeddings": [[float, ...], ...]
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
    {"seq": 7, "kind": "error", "code": "context_length_exceeded", "message": "...", "details": {}}
    done and error events also carry "request_id" when the submit had one.

Many sequences may be in flight at once; the worker decides how to schedule them.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 2**20


class ProtocolError(Exception):
    """A frame that cannot be read (the other side died or sent garbage)."""


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

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SamplingParams:
        return cls(**{**data, "stop": tuple(data.get("stop") or ())})


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
