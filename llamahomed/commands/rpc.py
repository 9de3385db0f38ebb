"""``llamahomed rpc serve``: lend this host's CPU or GPUs to a daemon on another host.

Runs ggml's RPC server from the installed llama.cpp (``llamahomed.engine.rpc``); a daemon with
this host in ``system_settings.rpc_servers`` splits a model's layers across it. ggml's RPC
protocol has no authentication and no encryption: the server binds loopback unless
``--allow-remote`` is given, and the docs show how to reach it through SSH or WireGuard.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from llamahomed.core.errors import StartupError
from llamahomed.core.settings import Settings, format_size, parse_size

DEFAULT_PORT = 50052  # ggml's rpc-server default
WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
WARNING: serving ggml RPC on {host}, which is not a loopback address.
  ggml's RPC protocol has NO authentication and NO encryption: anyone who can reach
  {host}:{port} can run computations here, read what this server holds and fill its memory.
  Only do this on a private network you trust (WireGuard), or better: bind 127.0.0.1 and
  reach it through an SSH tunnel (docs/Distributed.md).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    rpc = sub.add_parser("rpc", parents=[common], help="ggml RPC: lend this host's devices",
                         description="Serve this host's CPU or GPUs to a LlamaHome daemon on "
                         "another host (ggml's RPC backend; see docs/Distributed.md)")
    actions = rpc.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", parents=[common], help="run ggml's RPC server",
                               description="Run ggml's RPC server until stopped (Ctrl-C, SIGTERM).")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; others need --allow-remote)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"TCP port (default {DEFAULT_PORT})")
    serve.add_argument("--mem", help="memory to offer per device, comma-separated "
                       "(e.g. 8GiB or 8GiB,4GiB; default: what each device has free)")
    serve.add_argument("--threads", type=int, help="CPU threads (default: half the cores)")
    serve.add_argument("--device", help="ggml devices to serve, comma-separated (e.g. CUDA0 or "
                       "CPU; default: every GPU, else the CPU)")
    serve.add_argument("--cache", action="store_true",
                       help="keep received weights in a local file cache (faster reloads)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow a non-loopback --host (ggml RPC has no authentication or "
                       "encryption: see the warning)")


def check_bind(host: str, port: int, allow_remote: bool) -> str | None:
    """The warning to print for this bind (None for loopback); raises for a refused one."""
    from llamahomed.engine.rpc import is_loopback

    if not 0 < port < 65536:
        raise StartupError(f"--port {port}: use 1 to 65535")
    if is_loopback(host):
        return None
    if not allow_remote:
        raise StartupError(
            f"refusing to serve ggml RPC on {host}: the protocol has no authentication or "
            "encryption. Bind 127.0.0.1 and use an SSH tunnel, or pass --allow-remote on a "
            "network you trust (docs/Distributed.md)")
    return WARNING.format(host=host, port=port)


def _sizes(text: str | None) -> list[int | None]:
    if not text:
        return []
    try:
        return [parse_size(part) for part in text.split(",")]
    except ValueError as exc:
        raise StartupError(f"--mem: {exc}") from exc


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llamahomed.engine import rpc

    warning = check_bind(args.host, args.port, args.allow_remote)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    limits = _sizes(args.mem)
    if args.threads is not None and args.threads < 1:
        raise StartupError("--threads must be at least 1")
    try:
        devices = rpc.pick_devices([d for d in (args.device or "").split(",") if d])
    except rpc.RpcError as exc:
        raise StartupError(str(exc)) from exc
    if len(limits) > len(devices):
        raise StartupError(f"--mem gives {len(limits)} sizes for {len(devices)} device(s)")
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    cache = None
    if args.cache:
        cache_dir = settings.state_dir / "rpc-cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = str(cache_dir) + os.sep
    for row in rpc.device_table(devices, limits):
        print(f"device {row['index']}: {row['name']} ({row['description']}), "
              f"{format_size(row['free_bytes'])} of {format_size(row['total_bytes'])} offered",
              flush=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving ggml RPC on {host}:{args.port} with {threads} threads", flush=True)
    rpc.serve(f"{host}:{args.port}", devices, threads=threads, limits=limits, cache_dir=cache)
    return 0
