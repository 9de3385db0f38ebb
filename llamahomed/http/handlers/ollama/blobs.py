"""HEAD/POST /api/blobs/sha256:<digest> (admin): GGUF uploads for ``/api/create``.

A blob is kept as ``<models dir>/.blobs/sha256-<hex>`` (the same filesystem as the store, so
``/api/create`` hard-links it in at no cost). The digest in the path is checked to be 64 hex
digits before it names anything; the body is hashed while it is written to a temporary file,
which becomes the blob only if the digests agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from llamahomed.core.errors import InsufficientStorage, InvalidRequest
from llamahomed.http.keys import CONFIG
from llamahomed.registry.names import check_digest

BLOB_DIR = ".blobs"
CHUNK = 1 << 20


def blob_path(settings: Any, digest: str) -> Path:
    """Where the blob of ``digest`` (``sha256:<hex>``) lives; a 400 for anything else."""
    text = digest.strip()
    if not text.lower().startswith(("sha256:", "sha256-")):
        raise InvalidRequest(f"invalid digest {text[:80]!r}: expected sha256:<64 hex digits>")
    return Path(settings.models_path) / BLOB_DIR / f"sha256-{check_digest(text)}"


async def head_blob(request: web.Request) -> web.Response:
    path = blob_path(request.app[CONFIG].settings, request.match_info["digest"])
    return web.Response(status=200 if path.is_file() else 404)


async def upload_blob(request: web.Request) -> web.Response:
    path = blob_path(request.app[CONFIG].settings, request.match_info["digest"])
    expected = path.name.removeprefix("sha256-")
    path.parent.mkdir(parents=True, exist_ok=True)
    length = request.content_length
    if length is not None and shutil.disk_usage(path.parent).free < length:
        raise InsufficientStorage(f"not enough free disk space for a {length}-byte blob")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(request)}.partial")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        if digest.hexdigest() != expected:
            raise InvalidRequest(f"digest mismatch: the body's sha256 is {digest.hexdigest()}, "
                                 f"not {expected}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return web.Response(status=201)
