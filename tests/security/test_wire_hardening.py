"""Malformed, slow and too many connections against the real daemon, on raw sockets (issue 12.3,
12.4): no token or body byte reaches the log or the answer, parser errors get the envelope,
slow or idle connections are closed, connections are capped per peer and in total."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.tiny_gguf import write_tiny_llama
from tests.security.live import Live, read_response, seconds_until_closed

pytestmark = pytest.mark.e2e

PROMPT_SECRET = "purple-elephant-prompt-7731"
SHORT = {"LLAMAHOME_HEADER_TIMEOUT": "1", "LLAMAHOME_BODY_TIMEOUT": "2",
         "LLAMAHOME_KEEPALIVE_TIMEOUT": "1.5"}


@pytest.fixture
def live(tmp_path: Path, models_dir: Path) -> Iterator[Live]:
    daemon = Live(tmp_path / "live", models_dir, env={"LLAMAHOME_LOG_LEVEL": "debug", **SHORT})
    yield daemon
    daemon.stop()


def _head(live: Live, extra: str = "") -> bytes:
    return f"GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n{extra}".encode()


def _body_of(response: bytes) -> tuple[str, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode("latin-1"), json.loads(body)


def test_a_malformed_header_line_logs_no_token_and_answers_the_envelope(live: Live) -> None:
    token = live.token
    with live.connect() as sock:  # a token file with CRLF line endings does this
        sock.sendall(_head(live, f"Authorization: Bearer {token}\r\r\n\r\n"))
        response = read_response(sock)
    head, body = _body_of(response)
    assert head.split(" ")[1] == "400", response
    assert "application/json" in head
    assert body == {"error": {"code": "invalid_request", "message": "malformed HTTP request",
                              "details": {}}}
    assert token not in response.decode("latin-1")
    time.sleep(0.3)
    log = live.output()
    signature = token.rsplit(".", 1)[1]
    assert token not in log and signature not in log, log[-3000:]
    assert "malformed_request" in log  # still logged, without the bytes


def test_a_bad_chunked_body_logs_no_body_bytes_and_answers_the_envelope(live: Live) -> None:
    token = live.token
    with live.connect() as sock:
        sock.sendall(
            f"POST /api/v1/process HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
            f'10\r\n{{"prompt": "{PROMPT_SECRET}"\r\nzz{PROMPT_SECRET}\r\n\r\n'.encode())
        response = read_response(sock)
    text = response.decode("latin-1")
    assert text.split(" ")[1] == "400", text
    assert PROMPT_SECRET not in text and token not in text
    _, body = _body_of(response)
    assert body["error"]["code"] == "invalid_request"  # type: ignore[index]
    time.sleep(0.3)
    log = live.output()
    assert PROMPT_SECRET not in log and token not in log, log[-3000:]


def test_a_bad_request_line_is_the_envelope_without_an_echo(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(b"GET /\x01" + PROMPT_SECRET.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(sock)
    assert response.split(b" ")[1] == b"400", response
    assert PROMPT_SECRET.encode() not in response
    assert _body_of(response)[1]["error"]["message"] == "malformed HTTP request"  # type: ignore[index]


def test_incomplete_headers_are_closed_after_the_header_timeout(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # a slowloris: one byte of a header every half second
        start = time.monotonic()
        sock.settimeout(0.5)
        closed_after = None
        while time.monotonic() - start < 8:
            try:
                sock.sendall(b"X")
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None and closed_after < 3, closed_after  # header_timeout = 1 s


def test_an_incomplete_body_is_closed_after_the_body_timeout(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(f"POST /api/v1/process HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
                     f"Authorization: Bearer {live.token}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n\r\n{".encode())
        closed = seconds_until_closed(sock, 10)
    assert 1.5 < closed < 4.5, closed  # body_timeout = 2 s


def test_an_endless_chunked_body_is_closed_after_the_body_timeout(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(f"POST /api/v1/process HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
                     f"Authorization: Bearer {live.token}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        start = time.monotonic()
        closed_after = None
        while time.monotonic() - start < 10:
            try:
                sock.sendall(b"1\r\n \r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            time.sleep(0.1)
    assert closed_after is not None and closed_after < 4.5, closed_after


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(_head(live, "\r\n").replace(b"/api/v1/models", b"/health"))
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        closed = seconds_until_closed(sock, 10)
    assert 1.0 < closed < 3.5, closed  # keepalive_timeout = 1.5 s


def test_a_connection_that_sends_nothing_is_closed(live: Live) -> None:
    with live.connect() as sock:
        closed = seconds_until_closed(sock, 10)
    assert closed < 3.5, closed


def test_a_long_stream_is_not_idle(tmp_path: Path, models_dir: Path) -> None:
    """A response being streamed outlives the idle and header timeouts (here 0.5 s each)."""
    write_tiny_llama(models_dir / "tiny-long.gguf", n_ctx=4096,
                                                   name="tiny-long")
    daemon = Live(tmp_path / "stream", models_dir, env={
        "LLAMAHOME_HEADER_TIMEOUT": "0.5", "LLAMAHOME_KEEPALIVE_TIMEOUT": "0.5",
        "LLAMAHOME_BODY_TIMEOUT": "0.5"})
    body = json.dumps({"model": "tiny-long", "prompt": "the cat", "max_tokens": 4000,
                       "temperature": 0}).encode()
    try:
        with daemon.connect() as sock:
            sock.sendall(f"POST /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
                         f"Authorization: Bearer {daemon.token}\r\n"
                         "Content-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            start = time.monotonic()
            data = read_response(sock, timeout=60)
            took = time.monotonic() - start
    finally:
        assert daemon.stop() == 0
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert b'"done": true' in data.replace(b'"done":true', b'"done": true'), data[-500:]
    assert b'"error"' not in data, data[-500:]
    assert took > 0.5, took  # it ran past every timeout, and was not cut


def test_connections_are_capped_per_peer(tmp_path: Path, models_dir: Path) -> None:
    daemon = Live(tmp_path / "cap", models_dir, env={"LLAMAHOME_MAX_CONNECTIONS_PER_PEER": "5",
                                                     **SHORT, "LLAMAHOME_KEEPALIVE_TIMEOUT": "60",
                                                     "LLAMAHOME_HEADER_TIMEOUT": "60"})
    held: list[socket.socket] = []
    try:
        time.sleep(0.5)  # the readiness probe's connection has gone
        held += [daemon.connect() for _ in range(5)]
        time.sleep(0.3)
        with daemon.connect() as extra:
            response = read_response(extra, timeout=5)
        assert response.startswith(b"HTTP/1.1 503"), response
        assert json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"] == "server_busy"
        held.pop().close()
        time.sleep(0.3)
        with daemon.connect() as again:  # a slot came free
            again.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
                          "Connection: close\r\n\r\n".encode())
            assert read_response(again).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0


def test_connections_are_capped_in_total(tmp_path: Path, models_dir: Path) -> None:
    daemon = Live(tmp_path / "cap", models_dir, env={"LLAMAHOME_MAX_CONNECTIONS": "4",
                                                     "LLAMAHOME_KEEPALIVE_TIMEOUT": "60",
                                                     "LLAMAHOME_HEADER_TIMEOUT": "60"})
    held: list[socket.socket] = []
    try:
        time.sleep(0.5)  # the readiness probe's connection has gone
        held += [daemon.connect() for _ in range(4)]
        time.sleep(0.3)
        with daemon.connect() as extra:
            assert read_response(extra, timeout=5).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0


def test_fifty_half_open_connections_are_all_closed(live: Live) -> None:
    socks = [live.connect() for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    time.sleep(3.5)
    closed = 0
    for sock in socks:
        sock.settimeout(0.5)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except (TimeoutError, ConnectionResetError):
            pass
        sock.close()
    assert closed == 50


def test_an_ipv6_literal_host_with_brackets_binds(tmp_path: Path, models_dir: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    daemon = Live(tmp_path / "v6", models_dir, args=("--host", "[::1]", "--port", "0"))
    try:
        with socket.create_connection(("::1", daemon.port), timeout=5) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: [::1]:{daemon.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        status = daemon.cli("status")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        assert daemon.stop() == 0
