"""The model worker process: ``python -m llamahomed.engine.worker --fd N [--config JSON]``.

It owns one llama.cpp model. Without ``--config`` it starts as a spare (how the daemon starts
every worker, see ``engine/spare.py``): it imports llama.cpp and initialises its backend, then
waits for one ``{"op": "load", "config": {...}}`` frame, answers ``{"ev": "loading"}`` and loads
(a socket closed before that: it exits 0, having held no model). The main thread reads frames from the daemon (submit, cancel,
embed, tokenize, detokenize, shutdown); one decode thread owns the llama context and runs the engine's step loop, sending one
frame per step. The process exits when the daemon says so or its socket closes (the daemon died).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.protocol import (
    Failed,
    Prompt,
    ProtocolError,
    SamplingParams,
    encode,
    recv_frame,
)


class Channel:
    """The worker's end of the socketpair; sends are serialised across threads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.request_ids: dict[int, str] = {}  # seq -> the daemon's x-request-id, until it ends
        self.engine: Any = None  # set once loaded; its ``kv_usage`` (if any) rides on frames
        self._kv_usage: float | None = None

    def send(self, message: dict[str, Any]) -> None:
        data = encode(message)
        with self._lock:
            self._sock.sendall(data)

    def send_events(self, events: list[dict[str, Any]]) -> None:
        """One step frame; a sequence's last event carries its request id back."""
        if events:
            for event in events:
                if event.get("kind") in ("done", "error") and event.get("seq") in self.request_ids:
                    event["request_id"] = self.request_ids.pop(event["seq"])
            frame: dict[str, Any] = {"ev": "step", "events": events}
            with self._lock:  # frames leave in the order their kv_usage was read
                usage = getattr(self.engine, "kv_usage", None)
                if usage is not None and usage != self._kv_usage:  # sent when it changes
                    self._kv_usage = frame["kv_usage"] = usage
                self._sock.sendall(encode(frame))

    def recv(self) -> dict[str, Any] | None:
        return recv_frame(self._sock)


def _load_engine(config: LoadConfig, channel: Channel) -> Any:
    # Imported here so that a crash inside llama.cpp's import or load kills only this process.
    if config.engine == "batched":
        from llamahomed.engine.worker.batched import BatchedEngine

        return BatchedEngine.load(config, channel.send_events)
    from llamahomed.engine.worker.sequential import SequentialEngine

    return SequentialEngine.load(config, channel.send_events)


def _answer(channel: Channel, message: dict[str, Any],
            compute: Callable[[int], dict[str, Any]]) -> None:
    """Send the one event answering a request op (embed, tokenize, detokenize): ``compute``'s,
    or an error event for it; never a dead worker."""
    seq_id, op = int(message["seq"]), str(message["op"])
    try:
        event = compute(seq_id)
    except Exception as exc:  # noqa: BLE001 - reported to the daemon as this request's error
        event = Failed(seq_id, "internal_error", f"{op} failed: {type(exc).__name__}: {exc}").wire()
    try:
        channel.send_events([event])
    except ProtocolError:  # over the frame limit: refused, never a dead worker
        channel.send_events([Failed(seq_id, "invalid_request",
                                    f"the {op} answer is too large for one frame; "
                                    "send less at a time").wire()])
    except OSError:
        pass  # the daemon is gone


def _embed(embedder: Any, channel: Channel, message: dict[str, Any]) -> None:
    _answer(channel, message,
            lambda seq_id: embedder.embed(seq_id, [text if isinstance(text, str)
                                                   else [int(t) for t in text]
                                                   for text in message["inputs"]]))


def _vocab_op(vocab: Any, channel: Channel, message: dict[str, Any]) -> None:
    """A tokenize or detokenize, answered at once (the vocab is read-only; no context)."""
    if message["op"] == "tokenize":
        _answer(channel, message, lambda seq_id: vocab.tokenize(
            seq_id, str(message["content"]), add_special=bool(message.get("add_special", False)),
            parse_special=bool(message.get("parse_special", True)),
            with_pieces=bool(message.get("with_pieces", False))))
    else:
        _answer(channel, message, lambda seq_id: vocab.detokenize(
            seq_id, [int(t) for t in message["tokens"]]))


def serve(channel: Channel, config: LoadConfig) -> int:
    started = time.perf_counter()
    try:
        from llamahomed.planner.measured import capture_buffers, parse_buffers

        with capture_buffers() as lines:  # what llama.cpp allocates, for the planner
            engine = _load_engine(config, channel)
    except Exception as exc:  # noqa: BLE001 - every load failure is reported, then we exit
        channel.send({"ev": "load_failed", "message": f"{type(exc).__name__}: {exc}"})
        return 3
    channel.engine = engine
    info = engine.info()
    info["buffers"] = parse_buffers(lines)
    info["load_ms"] = round((time.perf_counter() - started) * 1000, 1)
    channel.send({"ev": "ready", "info": info})
    decode = threading.Thread(target=engine.run, name="decode", daemon=True)
    decode.start()
    embedder = None
    vocab = None
    try:
        while True:
            message = channel.recv()
            if message is None or message.get("op") == "shutdown":
                break
            op = message.get("op")
            if op == "submit":
                siblings = [int(seq) for seq in message.get("siblings") or ()]
                if message.get("request_id"):
                    for seq in (int(message["seq"]), *siblings):
                        channel.request_ids[seq] = str(message["request_id"])
                prompt: Prompt = ([int(t) for t in message["tokens"]] if "tokens" in message
                                  else str(message["prompt"]))
                engine.submit(int(message["seq"]), prompt,
                              SamplingParams.from_wire(message["params"]),
                              bool(message.get("special", False)), siblings)
            elif op == "cancel":
                engine.cancel(int(message["seq"]))
            elif op == "embed":
                embedder = embedder or engine.embedder()
                threading.Thread(target=_embed, args=(embedder, channel, message), name="embed",
                                 daemon=True).start()
            elif op in ("tokenize", "detokenize"):
                if vocab is None:
                    from llamahomed.engine.worker.vocab import Vocab

                    embedder = embedder or engine.embedder()  # makes no context until it embeds
                    vocab = Vocab(embedder.lib, embedder.model)
                _vocab_op(vocab, channel, message)
    except (ProtocolError, OSError):
        pass
    if embedder is not None:
        embedder.close()
    engine.stop()
    decode.join(timeout=5)
    return 0


def prewarm() -> None:
    """What every load needs before its model: llama.cpp imported, its backend initialised,
    the engine modules imported. A failure here is left for the load to report."""
    try:
        import llama_cpp

        llama_cpp.llama_backend_init()
        import llamahomed.engine.worker.batched  # noqa: F401 - imported for the load
        import llamahomed.planner.measured  # noqa: F401
    except Exception:  # noqa: BLE001 - the load imports again and reports the error
        pass


def wait_for_config(channel: Channel) -> str | None:
    """A spare's wait: the load config the daemon sends (JSON), acknowledged; None when the
    socket closed first (the daemon discarded the spare, or died)."""
    try:
        message = channel.recv()
    except (ProtocolError, OSError):
        return None
    if message is None or message.get("op") != "load":
        return None
    channel.send({"ev": "loading"})
    return str(message.get("config", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llamahomed-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", help="load at once (default: a spare, see the module doc)")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    channel = Channel(sock)
    wire = args.config
    if wire is None:
        prewarm()
        wire = wait_for_config(channel)
        if wire is None:
            os._exit(0)
    try:
        config = LoadConfig.from_wire(wire)
    except ValueError as exc:  # pydantic's ValidationError: refused before llama.cpp runs
        channel.send({"ev": "load_failed", "message": f"invalid load config: {exc}"})
        os._exit(3)
    code = serve(channel, config)
    sock.close()
    sys.stdout.flush()
    # Skip interpreter teardown: llama.cpp's static destructors can be slow or noisy at exit.
    os._exit(code)


if __name__ == "__main__":
    main()
