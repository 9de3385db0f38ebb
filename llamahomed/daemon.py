"""Running the app in the foreground: bind, announce, wait for a signal, drain, clean up."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal

import structlog
from aiohttp import web

from llamahomed.api.guard import check_bind
from llamahomed.app import create_app
from llamahomed.config_store import atomic_write
from llamahomed.errors import StartupError
from llamahomed.registry.default_model import install_default_model
from llamahomed.settings import Settings

log = structlog.get_logger(__name__)


def prepare(settings: Settings) -> None:
    """Directories and the embedded default model; failures are StartupErrors."""
    check_bind(settings, warn=False)
    for directory in (settings.state_dir, settings.models_path):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create {directory}: {exc.strerror}") from exc
    if settings.install_default_model:
        install_default_model(settings.models_path)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; streams in flight get ``drain_timeout`` seconds to finish."""
    check_bind(settings)
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=settings.drain_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = "the port is taken" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from exc
    port = _bound_port(runner) or settings.port
    atomic_write(settings.runtime_file, json.dumps(
        {"pid": os.getpid(), "host": settings.host, "port": port}).encode(), mode=0o600)
    log.info("listening", url=f"http://{settings.host}:{port}", models_dir=str(settings.models_path),
             token_file=str(settings.admin_token_file))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        settings.runtime_file.unlink(missing_ok=True)
        log.info("stopped")


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
