"""Running the app in the foreground: bind, announce, serve until a signal, drain, clean up.

Life cycle:

* start: directories (the state dir 0700), the state dir's lock (a second instance on the same
  state dir exits 1 naming the first one's pid), then bind (a taken port is a ``StartupError``: one line, exit 1), then
  the runtime file (``daemon.json``) and the pid file, then ``READY=1`` to systemd.
* SIGHUP: re-read the config file; live settings apply to the next request, settings that need
  a restart (address, directories) are kept and named in a warning. A broken file is logged
  and the old settings stay.
* SIGTERM / SIGINT: ``STOPPING=1``; new generations get ``503 shutting_down`` (HTTP, on new
  and kept-alive connections alike, and per request id on an open WebSocket); requests in
  flight get ``drain_timeout`` seconds to finish, then each ends with a final
  ``shutting_down`` error (a stream's last line, a WebSocket id's error message); then the
  listener and every connection close (WebSockets with 1001); workers are unloaded; exit 0.
  A second SIGTERM / SIGINT during the drain ends it at once (Ctrl-C twice).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from llamahomed.core.errors import ShuttingDown, StartupError
from llamahomed.core.files import atomic_write, private_dir
from llamahomed.core.instance import instance_lock
from llamahomed.core.notify import Notifier
from llamahomed.core.settings import Settings, read_config_file
from llamahomed.engine.spare import Spawned
from llamahomed.http.app import create_app
from llamahomed.http.connection import ConnectionLimits, GuardedRunner
from llamahomed.http.guard import bind_host, check_bind, url_host
from llamahomed.http.keys import CONFIG, INFERENCE, MONITORING
from llamahomed.registry.default_model import install_default_model

log = structlog.get_logger(__name__)

# Fields that only take effect at start; a reload keeps the running values.
RESTART_FIELDS = ("host", "port", "config_file", "data_dir", "models_dir", "state_dir",
                  "log_format", "max_body_bytes")
# After the drain timeout, how long handlers get to write their final error line.
FINAL_LINE_GRACE = 3.0
# Set by a second SIGTERM/SIGINT: stop draining now.
HURRY = web.AppKey("hurry", asyncio.Event)


def prepare(settings: Settings) -> None:
    """Directories and the embedded default model; failures are StartupErrors."""
    check_bind(settings, warn=False)
    for directory in (settings.state_dir, settings.models_path):
        try:
            if directory == settings.state_dir:
                private_dir(directory)
            else:
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create {directory}: {exc.strerror}") from exc
        if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise StartupError(f"{directory} is not a directory this user can read and write")
    if settings.install_default_model:
        install_default_model(settings.models_path)


async def serve(settings: Settings, notifier: Notifier | None = None, *,
                spare: Spawned | None = None) -> None:
    """Serve until SIGTERM/SIGINT (see the module docstring for the whole life cycle).
    ``spare``: a worker process the CLI started ahead, kept by the pool (killed here when
    the daemon does not get that far)."""
    try:
        check_bind(settings)
        with instance_lock(settings.lock_file):
            await _serve(settings, notifier or Notifier(None), spare)
    finally:
        if spare is not None and not spare.adopted:
            await spare.kill()


async def _serve(settings: Settings, notifier: Notifier, spare: Spawned | None = None) -> None:
    app = create_app(settings, spare=spare)
    app[HURRY] = asyncio.Event()
    runner = GuardedRunner(app, limits=ConnectionLimits(lambda: app[CONFIG].settings),
                           handler_cancellation=True, access_log=None,
                           shutdown_timeout=FINAL_LINE_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, bind_host(settings.host), settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = "the port is taken" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from exc
    port = _bound_port(runner) or settings.port
    # Signals before the runtime file announces the daemon: a SIGTERM sent as soon as
    # daemon.json exists must drain and exit 0, not kill the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_config(app, notifier))
    try:
        # The pid file first: daemon.json is what readers wait for, so both exist once it does.
        atomic_write(settings.pid_file, f"{os.getpid()}\n".encode(), mode=0o600)
        atomic_write(settings.runtime_file, json.dumps(
            {"pid": os.getpid(), "host": settings.host, "port": port}).encode(), mode=0o600)
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot write {settings.runtime_file}: {exc.strerror}") from exc
    url = f"http://{url_host(settings.host)}:{port}"
    log.info("listening", url=url, pid=os.getpid(), models_dir=str(settings.models_path),
             token_file=str(settings.admin_token_file))
    notifier.ready(f"listening on {url}")
    try:
        await stop.wait()
        notifier.stopping()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app[HURRY].set)
        log.info("stopping", drain_timeout=settings.drain_timeout)
        # Stop listening, then drain while open connections stay open: a request on a
        # kept-alive connection (or a WebSocket message) gets 503 shutting_down, not a closed
        # connection.
        await site.stop()
        await _drain(app)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await runner.cleanup()
        for path in (settings.runtime_file, settings.pid_file):
            path.unlink(missing_ok=True)
        log.info("stopped")


async def _drain(app: web.Application) -> None:
    """Before the server closes: refuse new work (503 shutting_down, on every transport), wait
    up to ``drain_timeout`` for what runs (HTTP streams and WebSocket generations alike), then
    end the rest with a final ``shutting_down`` error; WebSockets close (1001) after this."""
    if INFERENCE not in app:
        return
    service = app[INFERENCE]
    service.refusing = ShuttingDown("the daemon is shutting down; retry when it is back")
    timeout = app[CONFIG].settings.drain_timeout
    deadline = asyncio.get_running_loop().time() + timeout
    hurry = app.get(HURRY) or asyncio.Event()
    while service.pool.busy() and asyncio.get_running_loop().time() < deadline \
            and not hurry.is_set():
        await asyncio.sleep(0.05)
    forced = hurry.is_set()
    why = ("was told twice to stop" if forced
           else f"this request did not finish within the {timeout:g}s drain timeout")
    aborted = await service.pool.abort_all(ShuttingDown(
        f"the daemon is shutting down and {why}",
        details={"drain_timeout": timeout, "forced": forced}))
    if aborted:
        log.warning("drain_timeout", cancelled=aborted, forced=forced)
    else:
        log.info("drained")


def reload_config(app: web.Application, notifier: Notifier) -> bool:
    """SIGHUP: rebuild the settings from the environment and the config file."""
    config = app[CONFIG]
    old = config.settings
    notifier.reloading()
    try:
        fresh = type(old)(**{name: getattr(old, name) for name in RESTART_FIELDS})
    except (StartupError, ValidationError) as exc:
        log.error("reload_failed", config_file=str(old.config_file), error=_one_line(exc))
        notifier.ready("reload failed; old settings kept")
        return False
    written = read_config_file(old.config_file)
    kept = [name for name in RESTART_FIELDS
            if name in written and str(written[name]) != str(getattr(old, name))]
    config.settings = fresh
    app[MONITORING].metrics.enable_tracing = fresh.tracing
    if INFERENCE in app:
        app[INFERENCE].pool.spare.refresh()  # system_settings.spare_worker turned on or off
    changed = sorted(name for name in type(old).model_fields
                     if getattr(fresh, name) != getattr(old, name))
    log.info("reloaded", config_file=str(old.config_file), changed=changed)
    if kept:
        log.warning("reload_needs_restart", settings=kept)
    notifier.ready("reloaded")
    return True


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first: dict[str, Any] = dict(exc.errors()[0])
        return f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
