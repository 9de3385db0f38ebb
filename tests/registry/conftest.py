"""A local HTTP server that serves GGUF files the way download hosts do (or misbehave).

It listens on loopback, which the pull policy refuses unless named: tests pull from it with
``LOCAL`` (a policy that names 127.0.0.1) or ``system_settings.pull_allowed_hosts``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llamahomed.registry.policy import PullPolicy

LOCAL = PullPolicy(allowed=("127.0.0.1",))


@dataclass
class Served:
    """What the test server answers for ``/<file>``, and the headers of every request it saw."""

    body: bytes
    etag: str = '"v1"'
    status: int | None = None  # answer every request with this bare status
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    drop_after: int | None = None  # write this many bytes, then cut the connection ...
    drops: int = 1  # ... for this many responses
    chunked: bool = False  # no Content-Length (chunked transfer encoding)
    redirect: str | None = None  # answer 302 with this Location (relative or absolute)
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


SERVED = web.AppKey("served", Served)


async def _serve(request: web.Request) -> web.StreamResponse:
    served = request.app[SERVED]
    served.requests.append(dict(request.headers))
    if served.status is not None:
        return web.Response(status=served.status, text="nope")
    if served.redirect is not None and request.path != served.redirect:
        return web.Response(status=302, headers={"Location": served.redirect})
    body, start, status = served.body, 0, 200
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if wanted and not served.ignore_range and (if_range is None or if_range == served.etag):
        start = int(wanted.removeprefix("bytes=").split("-")[0])
        if start >= len(body):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
        status = 206
    data = body[start:]
    headers = {"Content-Length": str(len(data)), "ETag": served.etag,
               "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
    if served.chunked:
        del headers["Content-Length"]
    response = web.StreamResponse(status=status, headers=headers)
    if served.chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    if served.drop_after is not None and served.drops > 0:
        served.drops -= 1
        await response.write(data[:served.drop_after])
        assert request.transport is not None
        request.transport.abort()  # the connection dies mid-body
        return response
    for offset in range(0, len(data), 65536):
        await response.write(data[offset:offset + 65536])
    await response.write_eof()
    return response


@pytest.fixture
def tiny_bytes(tiny_model_file: Path) -> bytes:
    return tiny_model_file.read_bytes()


@pytest.fixture
async def file_server(aiohttp_server: Callable[..., Awaitable[Any]],
                      tiny_bytes: bytes) -> tuple[Served, Any]:
    """(what it serves, the server): ``server.make_url('/x.gguf')`` serves ``Served.body``."""
    served = Served(tiny_bytes)
    app = web.Application()
    app[SERVED] = served
    app.router.add_get("/{name}", _serve)
    server = await aiohttp_server(app)
    return served, server
