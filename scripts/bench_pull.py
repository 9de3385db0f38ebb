#!/usr/bin/env python3
"""Throughput of ``pull`` from a local aiohttp server (loopback: measures our own overhead).

    python scripts/bench_pull.py FILE.gguf [--drop-at 0.5]

Serves FILE on 127.0.0.1, pulls it into a temporary store with sha256 verification and prints
MB/s; with --drop-at the first response is cut at that fraction and the pull resumes by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

from aiohttp import web

from llamahomed.registry.policy import PullPolicy
from llamahomed.registry.pull import PullSource, download


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--drop-at", type=float, default=None)
    args = parser.parse_args()
    body = args.file.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    cut = [int(len(body) * args.drop_at)] if args.drop_at else []

    async def serve(request: web.Request) -> web.StreamResponse:
        start = int(request.headers.get("Range", "bytes=0-")[6:].split("-")[0])
        status = 206 if start else 200
        headers = {"Content-Length": str(len(body) - start), "ETag": '"b"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        end = cut.pop() if cut else len(body)
        for offset in range(start, end, 1 << 20):
            await response.write(body[offset:min(offset + (1 << 20), end)])
        if end < len(body):
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as store:
        started = time.perf_counter()
        result = await download(PullSource(f"http://127.0.0.1:{port}/{args.file.name}",
                                           args.file.name, digest), Path(store), backoff=0,
                                policy=PullPolicy(allowed=("127.0.0.1",)))  # loopback: named
        seconds = time.perf_counter() - started
    await runner.cleanup()
    print(f"{len(body) / 1e6:.1f} MB in {seconds:.2f} s = {len(body) / 1e6 / seconds:.0f} MB/s "
          f"(verified={result.verified}, drop at {args.drop_at})")


if __name__ == "__main__":
    asyncio.run(main())
