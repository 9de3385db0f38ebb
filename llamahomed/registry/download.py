"""The transfer behind ``pull``: resumable, verified, atomic HTTP download of one GGUF file.

A download goes to ``<file>.part`` beside its target, with ``<file>.part.json`` recording the URL
and the server's validator (ETag or Last-Modified). A later download of the same file resumes with
``Range: bytes=<have>-`` and ``If-Range``; a server that ignores the range (answers 200) or whose
file changed restarts it from zero. The sha256 is computed while the bytes arrive (the partial's
prefix is hashed once on resume), the first bytes must be the GGUF magic, the free disk space is
checked against the remaining length before any byte is written and again before every write, and
only a complete, verified file whose header parses (and holds tensors) is moved into place, never
over an existing file.

Every URL, redirect hop and resolved address is checked against a ``PullPolicy``
(``registry/policy.py``): allowed hosts, no non-public addresses unless named, at most
``MAX_REDIRECTS`` redirects, a size limit enforced as the bytes arrive. Errors are terse: what
failed and a short reason class, never the peer's bytes or how exactly a connection failed
(refused, reset, timed out and "not HTTP" read the same); the daemon log has the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog

from llamahomed.core.errors import (
    AlreadyExists,
    DigestMismatch,
    DownloadFailed,
    DownloadInterrupted,
    DownloadNotFound,
    InsufficientStorage,
    NotGGUF,
)
from llamahomed.registry.catalog import CatalogModel, CatalogVariant
from llamahomed.registry.gguf_meta import GGUF_MAGIC, GGUFError, read_model_info
from llamahomed.registry.policy import PullPolicy, PullRefused

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Progress", "PullProgress", "PullResult", "PullSource", "download"]

log = structlog.get_logger(__name__)

CHUNK = 1 << 20
WRITE_BUFFER = 4 << 20
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
NO_ANSWER = "no usable HTTP answer (cannot connect, no answer in time, or not an HTTP server)"


@dataclass(frozen=True)
class PullSource:
    """What to download and how to check it (``sha256 == ""``: cannot be verified)."""

    url: str
    file: str
    sha256: str = ""
    size: int | None = None
    model: CatalogModel | None = None
    variant: CatalogVariant | None = None


@dataclass(frozen=True)
class PullProgress:
    """``status`` is ``downloading``, ``verifying`` or ``success``; bytes so far of ``total``."""

    status: str
    completed: int
    total: int | None
    file: str


@dataclass(frozen=True)
class PullResult:
    path: Path
    sha256: str | None  # None when the file was already there and was not read
    verified: bool  # the digest matched an expected one
    resumed_from: int  # bytes that were already on disk when this pull started
    already_present: bool = False


Progress = Callable[[PullProgress], None]


class _Restart(Exception):
    """The partial cannot be continued (range refused or misplaced): start from zero."""


class _Unanswered(Exception):
    """No response came (connect, TLS, or the answer's head failed): retried, then one message."""


@dataclass
class _State:
    """One pull's partial file, its lock, and the running digest of its bytes."""

    source: PullSource
    part: Path
    meta_file: Path
    handle: IO[bytes]
    hasher: Any
    have: int = 0  # bytes in the partial
    hashed: int = 0  # of which the running digest has seen
    total: int | None = None
    resumed_from: int = 0
    limit: int = 0  # most bytes the file may have (PullPolicy.limit)
    directory: Path | None = None  # where it is written: free space is checked there

    def truncate(self) -> None:
        self.handle.truncate(0)
        self.handle.seek(0)
        self.have, self.hashed, self.hasher = 0, 0, hashlib.sha256()
        self.meta_file.unlink(missing_ok=True)


def _part_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")


async def download(source: PullSource, models_dir: Path, *,
                   session: aiohttp.ClientSession | None = None, progress: Progress | None = None,
                   retries: int = 2, backoff: float = 1.0,
                   policy: PullPolicy | None = None) -> PullResult:
    """Download ``source`` into ``models_dir`` and return where it went.

    ``policy`` (default: the built-in catalog's hosts, the default size limit) decides what may
    be fetched; a ``session`` given here must bring its own resolver (the policy's guards
    addresses only in the session made here). An interrupted transfer is retried ``retries``
    times (resuming, after ``backoff`` x 2^n seconds); after that ``DownloadInterrupted``
    leaves the partial for the next call.
    """
    target = models_dir / source.file
    if target.exists():
        return PullResult(target, None, False, 0, already_present=True)
    policy = policy or PullPolicy.default()
    policy.check_url(source.url)
    models_dir.mkdir(parents=True, exist_ok=True)
    if source.size is not None:
        _check_space(models_dir, source.size - _size_of(_part_paths(target)[0]), source.file)
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
            connector = aiohttp.TCPConnector(resolver=policy.resolver())
            session = await stack.enter_async_context(
                aiohttp.ClientSession(timeout=timeout, connector=connector))
        state = stack.enter_context(_open_partial(source, target))
        state.limit, state.directory = policy.limit(source.size), models_dir
        attempt = 0
        while True:
            try:
                await _transfer(session, state, models_dir, progress, policy)
                break
            except _Restart:  # only raised for a non-empty partial, so this cannot loop
                log.info("pull_restart", file=source.file, discarded=state.have)
                state.truncate()
            except (DownloadInterrupted, _Unanswered) as exc:
                if attempt == retries:
                    if isinstance(exc, _Unanswered):
                        raise _failed(source.url, NO_ANSWER) from exc
                    raise
                log.warning("pull_retry", file=source.file, have=state.have, attempt=attempt + 1)
                await asyncio.sleep(backoff * 2**attempt)
                attempt += 1
        return await _finish(state, target, progress)


def _failed(url: str, why: str, **details: Any) -> DownloadFailed:
    host = urlsplit(url).hostname or url
    return DownloadFailed(f"the download from {host} failed: {why}", details={"url": url, **details})


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def _open_partial(source: PullSource, target: Path) -> Iterator[_State]:
    """Open (and lock) the partial; keep it when it belongs to the same URL."""
    part, meta_file = _part_paths(target)
    handle = open(part, "ab")  # noqa: SIM115 - closed below
    locked = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AlreadyExists(f"another pull of {source.file} is running",
                                    details={"file": source.file}) from exc
        locked = True
        state = _State(source, part, meta_file, handle, hashlib.sha256())
        meta = _read_meta(meta_file)
        have = os.fstat(handle.fileno()).st_size
        if have and (meta.get("url") != source.url or have < len(GGUF_MAGIC)):
            state.truncate()
        else:
            state.have = state.resumed_from = have
            state.total = meta.get("total")
        yield state
    finally:
        handle.close()
        if locked and _size_of(part) == 0:  # never leave an empty partial behind
            part.unlink(missing_ok=True)
            meta_file.unlink(missing_ok=True)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def _open(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                policy: PullPolicy) -> aiohttp.ClientResponse:
    """GET ``url``, following at most ``policy.max_redirects`` redirects, each hop checked."""
    for _ in range(policy.max_redirects + 1):
        response = await session.get(url, headers=headers, allow_redirects=False)
        if response.status not in _REDIRECTS:
            return response
        location = response.headers.get("Location", "")
        response.release()
        if not location:
            raise _failed(url, f"HTTP {response.status} without a Location")
        following = urljoin(url, location)
        policy.check_redirect(url, following)
        url = following
    raise PullRefused(f"the pull of {urlsplit(url).hostname} was redirected more than "
                      f"{policy.max_redirects} times: refused", details={"url": url})


async def _transfer(session: aiohttp.ClientSession, state: _State, models_dir: Path,
                    progress: Progress | None, policy: PullPolicy) -> None:
    """One request: continue the partial from ``state.have`` to the end (or raise)."""
    await _catch_up_digest(state)
    headers = {"Accept-Encoding": "identity"}
    meta = _read_meta(state.meta_file)
    if state.have:
        headers["Range"] = f"bytes={state.have}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    url = state.source.url
    try:
        response = await _open(session, url, headers, policy)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        log.info("pull_no_answer", url=url, error=repr(exc))  # the detail, for the daemon log
        raise _Unanswered from exc
    try:
        total = _check_response(response, state)
        if response.status == 416:  # the partial is already the whole file
            state.total = total
            return
        _check_space(models_dir, (total or 0) - state.have, state.source.file)
        state.total = total
        state.meta_file.write_text(json.dumps({"url": url, "total": total,
                                               "validator": _validator(response)}))
        _report(progress, state)  # where this request starts
        await _receive(response, state, progress)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError, asyncio.TimeoutError) as exc:
        log.info("pull_broke_off", url=url, error=repr(exc))
        raise _interrupted(state, "the transfer broke off") from exc
    except aiohttp.ClientError as exc:
        log.info("pull_failed", url=url, error=repr(exc))
        raise _failed(url, "the transfer failed") from exc
    finally:
        response.release()
    if state.total is not None and state.have < state.total:
        raise _interrupted(state, "the server closed the connection early")


def _interrupted(state: _State, why: str) -> DownloadInterrupted:
    return DownloadInterrupted(
        f"{why} after {state.have} of {state.total or '?'} bytes of {state.source.file}; "
        "run the same pull again to resume",
        details={"url": state.source.url, "received": state.have, "total": state.total,
                 "partial": str(state.part)})


def _check_response(response: aiohttp.ClientResponse, state: _State) -> int | None:
    """The file's full length from the headers; decide between resume, restart and failure."""
    url = state.source.url
    if response.status in (404, 410):
        raise DownloadNotFound(f"{url} does not exist (HTTP {response.status})",
                               details={"url": url, "status": response.status})
    if response.status == 416 and state.have:
        _, _, total = _content_range(response.headers.get("Content-Range", ""))
        if total == state.have:
            return total  # the partial was already complete
        raise _Restart
    if response.status == 206 and state.have:
        start, _, total = _content_range(response.headers.get("Content-Range", ""))
        if start != state.have:
            raise _Restart
    elif response.status == 200:
        if state.have:
            log.info("pull_range_ignored", file=state.source.file, discarded=state.have)
            state.truncate()
            state.resumed_from = 0
        total = response.content_length
    else:  # the status only: the reason phrase is the peer's text
        raise _failed(url, f"HTTP {response.status}", status=response.status)
    expected = state.source.size
    if expected is not None and total is not None and total != expected:
        raise DownloadFailed(f"{url} is {total} bytes but the catalog says {expected}: wrong file",
                             details={"url": url, "size": total, "expected_size": expected})
    if total is not None and total > state.limit:
        raise _too_large(state, total)
    return total


def _too_large(state: _State, size: int | None) -> DownloadFailed:
    what = f"is {size} bytes" if size is not None else "sends more bytes"
    return DownloadFailed(
        f"{state.source.file} {what}, over the pull size limit of {state.limit} "
        "(the catalog's size for it, or system_settings.pull_max_size): not downloaded",
        details={"url": state.source.url, "limit": state.limit, "setting":
                 "system_settings.pull_max_size"})


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    match = _CONTENT_RANGE_RE.match(value.strip())
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (int(start) if start else None, int(end) if end else None,
            int(total) if total and total != "*" else None)


def _validator(response: aiohttp.ClientResponse) -> str | None:
    """A strong ETag (If-Range refuses weak ones), else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _check_space(models_dir: Path, needed: int, file: str) -> None:
    free = shutil.disk_usage(models_dir).free
    if needed > free:
        raise InsufficientStorage(
            f"{file} needs {needed} more bytes but {models_dir} has only {free} free",
            details={"file": file, "needed": needed, "free": free})


async def _catch_up_digest(state: _State) -> None:
    """Hash the partial's bytes that the running digest has not seen (a resumed pull)."""
    if state.have == 0:
        state.hasher = hashlib.sha256()
        return
    if state.hashed == state.have:
        return
    state.hasher = hashlib.sha256()
    await asyncio.to_thread(_hash_prefix, state.part, state.have, state.hasher)
    state.hashed = state.have


def _hash_prefix(path: Path, length: int, hasher: Any) -> None:
    with path.open("rb") as fh:
        left = length
        while left:
            block = fh.read(min(CHUNK * 8, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)


async def _receive(response: aiohttp.ClientResponse, state: _State,
                   progress: Progress | None) -> None:
    buffer = bytearray()
    checked = state.have > 0  # a kept partial passed the magic check when it was written
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            buffer += chunk
            if state.have + len(buffer) > state.limit:  # with or without a Content-Length
                buffer.clear()
                state.truncate()
                raise _too_large(state, None)
            if not checked and len(buffer) >= len(GGUF_MAGIC):
                _check_magic(bytes(buffer[:len(GGUF_MAGIC)]), state)
                checked = True
            if checked and len(buffer) >= WRITE_BUFFER:
                await _flush(state, buffer)
                _report(progress, state)
    finally:  # what arrived before a break-off is kept for the resume
        if checked and buffer:
            await _flush(state, buffer)
            _report(progress, state)
    if not checked:
        _check_magic(bytes(buffer), state)  # a body shorter than the magic


def _check_magic(head: bytes, state: _State) -> None:
    if not head.startswith(GGUF_MAGIC):  # what it starts with is the peer's: not echoed
        state.truncate()
        raise NotGGUF(f"{state.source.url} is not a GGUF file (it does not start with the GGUF "
                      "magic)", details={"url": state.source.url})


async def _flush(state: _State, buffer: bytearray) -> None:
    data = bytes(buffer)
    buffer.clear()
    if state.directory is not None:  # the disk may fill while the download runs
        remaining = (state.total or 0) - state.have
        _check_space(state.directory, max(len(data), remaining), state.source.file)
    await asyncio.to_thread(_write, state, data)


def _write(state: _State, data: bytes) -> None:
    try:
        state.handle.write(data)
        state.handle.flush()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise InsufficientStorage(f"the disk filled up while {state.source.file} was written; "
                                  "free some space and run the same pull again to resume",
                                  details={"file": state.source.file}) from exc
    state.hasher.update(data)
    state.have += len(data)
    state.hashed = state.have


def _report(progress: Progress | None, state: _State, status: str = "downloading") -> None:
    if progress is not None:
        progress(PullProgress(status, state.have, state.total, state.source.file))


async def _finish(state: _State, target: Path, progress: Progress | None) -> PullResult:
    """Check digest and header, then move the partial into place."""
    _report(progress, state, "verifying")
    await _catch_up_digest(state)
    digest = state.hasher.hexdigest()
    expected = state.source.sha256
    if expected and digest != expected:
        _discard(state)
        raise DigestMismatch(
            f"{state.source.file} has sha256 {digest}, expected {expected}: the download is "
            "corrupt or not the expected file; it was deleted",
            details={"file": state.source.file, "sha256": digest, "expected": expected})
    try:
        await asyncio.to_thread(read_model_info, state.part)
    except GGUFError as exc:
        _discard(state)
        raise NotGGUF(f"{state.source.file} is not a usable GGUF file: {exc}",
                      details={"file": state.source.file}) from exc
    try:
        os.link(state.part, target)
    except FileExistsError as exc:
        raise AlreadyExists(f"{target} appeared during the download; not overwritten",
                            details={"file": target.name}) from exc
    except OSError:
        os.replace(state.part, target)
    _discard(state)
    _report(progress, state, "success")
    return PullResult(target, digest, bool(expected), state.resumed_from)


def _discard(state: _State) -> None:
    state.part.unlink(missing_ok=True)
    state.meta_file.unlink(missing_ok=True)
