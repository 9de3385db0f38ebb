"""ggml's RPC backend through its C API: serve this host's devices, or use another host's.

Both ends come from the same installed llama.cpp (``libggml-rpc.so`` next to llama-cpp-python's
libraries), so client and server speak the same RPC protocol version (``RPC_PROTO_*`` in
``ggml-rpc.h``: 7.0.0 for llama-cpp-python 0.3.36). The C signatures bound here are that header's:

* ``ggml_backend_rpc_start_server(endpoint, cache_dir, n_threads, n_devices, devices)``: serves
  until the process ends (``serve``);
* ``ggml_backend_rpc_add_server(endpoint) -> ggml_backend_reg_t``: a registry whose devices are
  the server's devices; they are added to ggml's device list with
  ``ggml_backend_device_register`` (``register``) and read with ``ggml_backend_dev_memory``.

ggml's own connect has no timeout and aborts the process on a protocol error, so every endpoint
is first tried with a plain TCP connect under a timeout (``tcp_problem``), and the daemon reads
remote memory in a child process (``read_remote_devices``). ggml's RPC protocol has no
authentication and no encryption: bind loopback, or reach other hosts through an SSH tunnel or
WireGuard (docs/Distributed.md).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["RemoteDevice", "RpcError", "is_loopback", "read_remote_devices", "register",
           "serve", "split_endpoint", "tcp_problem"]

PROBE_TIMEOUT = 2.0      # seconds a TCP connect to an RPC host may take
READ_TIMEOUT = 10.0      # seconds the child reading remote memory may take
_DEV_TYPE_CPU = 0
_IFACE_SLOTS = 48        # most pointer slots looked at in a ggml device or backend struct
_GET_MEMORY_SLOT = 2     # ggml_backend_device_i: get_name, get_description, get_memory,
_INIT_BACKEND_SLOT = 5   # get_type, get_props, init_backend, ...


class RpcError(Exception):
    """An RPC endpoint that cannot be used (bad address, not answering, no such device)."""


@dataclass(frozen=True)
class RemoteDevice:
    """One device an RPC server exposes; memory in bytes as the server reports it."""

    endpoint: str
    index: int
    name: str
    description: str
    free: int
    total: int


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); raises ``ValueError``."""
    host, sep, port = endpoint.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an RPC endpoint: {endpoint!r} (use host:port)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_problem(endpoint: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``endpoint`` cannot be reached by TCP within ``timeout`` seconds (None: it can)."""
    try:
        host, port = split_endpoint(endpoint)
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ValueError as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def unreachable(endpoints: Iterable[str], timeout: float = PROBE_TIMEOUT) -> dict[str, str]:
    """``{endpoint: why}`` for each endpoint that does not answer a TCP connect."""
    problems = {ep: tcp_problem(ep, timeout) for ep in endpoints}
    return {ep: why for ep, why in problems.items() if why is not None}


# --- the C API ------------------------------------------------------------------------------------

class _Ggml:
    """ggml's device API and the RPC backend, bound once per process."""

    def __init__(self) -> None:
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        mode = getattr(os, "RTLD_GLOBAL", 0)
        self.base = ctypes.CDLL(str(_library(lib_dir, "ggml-base")), mode=mode)
        self.ggml = ctypes.CDLL(str(_library(lib_dir, "ggml")), mode=mode)
        self.rpc = ctypes.CDLL(str(_library(lib_dir, "ggml-rpc")), mode=mode)
        vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        psz = ctypes.POINTER(ctypes.c_size_t)
        for lib, name, res, args in (
            (self.ggml, "ggml_backend_dev_count", sz, []),
            (self.ggml, "ggml_backend_dev_get", vp, [sz]),
            (self.ggml, "ggml_backend_dev_by_name", vp, [cp]),
            (self.ggml, "ggml_backend_device_register", None, [vp]),
            (self.base, "ggml_backend_dev_name", cp, [vp]),
            (self.base, "ggml_backend_dev_description", cp, [vp]),
            (self.base, "ggml_backend_dev_type", ctypes.c_int, [vp]),
            (self.base, "ggml_backend_dev_memory", None, [vp, psz, psz]),
            (self.base, "ggml_backend_dev_backend_reg", vp, [vp]),
            (self.base, "ggml_backend_reg_dev_count", sz, [vp]),
            (self.base, "ggml_backend_reg_dev_get", vp, [vp, sz]),
            (self.rpc, "ggml_backend_rpc_add_server", vp, [cp]),
            (self.rpc, "ggml_backend_rpc_start_server", None, [cp, cp, sz, sz, ctypes.POINTER(vp)]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
            setattr(self, name.removeprefix("ggml_backend_"), fn)

    def memory(self, dev: int) -> tuple[int, int]:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))  # type: ignore[attr-defined]
        return int(free.value), int(total.value)

    def name(self, dev: int) -> str:
        return (self.dev_name(dev) or b"").decode(errors="replace")  # type: ignore[attr-defined]

    def description(self, dev: int) -> str:
        return (self.dev_description(dev) or b"").decode(errors="replace")  # type: ignore[attr-defined]

    def local_devices(self) -> list[int]:
        return [self.dev_get(i) for i in range(self.dev_count())]  # type: ignore[attr-defined]


def _library(lib_dir: Path, stem: str) -> Path:
    for suffix in (".so", ".dylib", ".dll"):
        for prefix in ("lib", ""):
            path = lib_dir / f"{prefix}{stem}{suffix}"
            if path.exists():
                return path
    raise RpcError(f"{stem} is not in {lib_dir}: this llama-cpp-python was built without "
                   "GGML_RPC=ON (reinstall it with scripts/install)")


_bound: list[_Ggml] = []


def ggml() -> _Ggml:
    """The bindings, loaded on first use (never at import: the daemon keeps llama.cpp out)."""
    if not _bound:
        _bound.append(_Ggml())
    return _bound[0]


# --- client side -----------------------------------------------------------------------------------

def _server_devices(lib: _Ggml, endpoint: str) -> list[int]:
    problem = tcp_problem(endpoint)
    if problem is not None:
        raise RpcError(f"RPC host {endpoint} is not answering ({problem})")
    reg = lib.rpc_add_server(endpoint.encode())  # type: ignore[attr-defined]
    if not reg:
        raise RpcError(f"RPC host {endpoint} refused the connection (another RPC protocol version?)")
    return [lib.reg_dev_get(reg, i) for i in range(lib.reg_dev_count(reg))]  # type: ignore[attr-defined]


def register(endpoints: Sequence[str]) -> dict[str, list[int]]:
    """Connect to each RPC server and add its devices to ggml's device list (in the worker,
    before the model loads); ``{endpoint: [ggml_backend_dev_t, ...]}``."""
    lib = ggml()
    known = set(lib.local_devices())
    out: dict[str, list[int]] = {}
    for endpoint in endpoints:
        devices = _server_devices(lib, endpoint)
        for dev in devices:
            if dev not in known:
                lib.device_register(dev)  # type: ignore[attr-defined]
                known.add(dev)
        out[endpoint] = devices
    return out


def describe(endpoints: Sequence[str]) -> list[RemoteDevice]:
    """Every device of every endpoint with its memory, read through ggml (in this process)."""
    lib = ggml()
    found: list[RemoteDevice] = []
    for endpoint in endpoints:
        for i, dev in enumerate(_server_devices(lib, endpoint)):
            free, total = lib.memory(dev)
            found.append(RemoteDevice(endpoint, i, lib.name(dev), lib.description(dev), free, total))
    return found


def read_remote_devices(endpoints: Sequence[str], *, timeout: float = READ_TIMEOUT,
                        probe_timeout: float = PROBE_TIMEOUT,
                        ) -> tuple[list[RemoteDevice], dict[str, str]]:
    """The devices of the RPC servers that answer, and ``{endpoint: why}`` for the others.

    A TCP probe first (``probe_timeout`` each), then ggml reads the devices in a child process
    (``timeout`` in all): ggml's connect cannot time out and aborts on a protocol error, and the
    daemon keeps llama.cpp out of its own process. Never raises, never hangs.
    """
    problems = unreachable(endpoints, probe_timeout)
    reachable = [ep for ep in endpoints if ep not in problems]
    devices: list[RemoteDevice] = []
    for endpoint in reachable:  # one child per host: one host's fault leaves the others readable
        code = ("import json, sys; from dataclasses import asdict; "
                "from llamahomed.engine.rpc import describe; "
                "print(json.dumps([asdict(d) for d in describe(sys.argv[1:])]))")
        try:
            out = subprocess.run([sys.executable, "-c", code, endpoint], capture_output=True,
                                 text=True, timeout=timeout, check=False)
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
                problems[endpoint] = f"ggml could not read its devices ({last[-200:]})"
                continue
            devices += [RemoteDevice(**d) for d in json.loads(out.stdout.strip().splitlines()[-1])]
        except subprocess.TimeoutExpired:
            problems[endpoint] = (f"accepted a connection but did not answer within {timeout:g} s "
                                  "(busy? an RPC server serves one client at a time)")
        except (OSError, ValueError, TypeError, IndexError) as exc:
            problems[endpoint] = f"its devices could not be read ({type(exc).__name__})"
    return devices, problems


# --- server side -----------------------------------------------------------------------------------

_keep: list[Any] = []  # callbacks and device copies that must outlive the server call


def _limited(lib: _Ggml, dev: int, limit: int) -> int:
    """A copy of device ``dev`` that reports at most ``limit`` bytes of memory (``--mem``).

    The copy shares the device's interface, registry and context; only its memory answer
    differs: total ``limit``, free ``limit`` less what this process has grown by since it
    started serving (its buffers), never more than the device's own free memory.
    """
    import psutil

    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    mem_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                              ctypes.POINTER(ctypes.c_size_t))

    def get_memory(_dev: int, free: Any, total: Any) -> None:
        real_free, _ = lib.memory(dev)
        used = max(0, proc.memory_info().rss - start_rss)
        free[0] = max(0, min(real_free, limit - used))
        total[0] = limit

    # struct ggml_backend_device is {iface (function pointers), reg, context}: copy up to and
    # including the slot after the one that holds the device's registry.
    reg = lib.dev_backend_reg(dev)  # type: ignore[attr-defined]
    slots = (ctypes.c_void_p * _IFACE_SLOTS).from_address(dev)
    size = next((i + 2 for i in range(_IFACE_SLOTS - 1) if slots[i] == reg), None)
    if size is None or size <= _INIT_BACKEND_SLOT:
        raise RpcError("cannot limit this device's memory (unexpected ggml device layout)")
    copy = (ctypes.c_void_p * size).from_buffer_copy((ctypes.c_void_p * size).from_address(dev))
    init_fn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
    original_init = init_fn(copy[_INIT_BACKEND_SLOT] or 0)

    def init_backend(_dev: int, params: bytes | None) -> int:
        # The backend the device makes points back at the real device; the server asks that
        # one for its memory, so point it at the copy.
        backend = original_init(dev, params)
        if backend:
            fields = (ctypes.c_void_p * _IFACE_SLOTS).from_address(backend)
            for i in range(_IFACE_SLOTS):
                if fields[i] == dev:
                    fields[i] = ctypes.addressof(copy)
                    break
        return int(backend or 0)

    callbacks = (mem_fn(get_memory), init_fn(init_backend))
    copy[_GET_MEMORY_SLOT] = ctypes.cast(callbacks[0], ctypes.c_void_p).value
    copy[_INIT_BACKEND_SLOT] = ctypes.cast(callbacks[1], ctypes.c_void_p).value
    _keep.extend([callbacks, copy, original_init])
    return ctypes.addressof(copy)


def pick_devices(names: Sequence[str]) -> list[int]:
    """Devices by ggml name (``CPU``, ``CUDA0``, ...); none named: every GPU, else the CPU."""
    lib = ggml()
    if names:
        picked = []
        for name in names:
            dev = lib.dev_by_name(name.encode())  # type: ignore[attr-defined]
            if not dev:
                have = ", ".join(lib.name(d) for d in lib.local_devices())
                raise RpcError(f"no device named {name!r} here (devices: {have})")
            picked.append(dev)
        return picked
    devices = lib.local_devices()
    gpus = [d for d in devices if lib.dev_type(d) != _DEV_TYPE_CPU]  # type: ignore[attr-defined]
    return gpus or [d for d in devices if lib.dev_type(d) == _DEV_TYPE_CPU][:1]  # type: ignore[attr-defined]


def device_table(devices: Sequence[int], limits: Sequence[int | None] = ()) -> list[dict[str, Any]]:
    """What ``serve`` will expose, for the startup message."""
    lib = ggml()
    rows = []
    for i, dev in enumerate(devices):
        free, total = lib.memory(dev)
        limit = limits[i] if i < len(limits) else None
        rows.append({"index": i, "name": lib.name(dev), "description": lib.description(dev),
                     "free_bytes": min(free, limit) if limit else free,
                     "total_bytes": limit or total})
    return rows


def serve(endpoint: str, devices: Sequence[int], *, threads: int,
          limits: Sequence[int | None] = (), cache_dir: str | None = None) -> None:
    """Run ggml's RPC server on ``endpoint`` until the process is stopped (never returns).

    ``limits``: per device, the memory it reports (None: the device's own).
    """
    lib = ggml()
    exposed = []
    for i, dev in enumerate(devices):
        limit = limits[i] if i < len(limits) else None
        exposed.append(_limited(lib, dev, limit) if limit else dev)
    array = (ctypes.c_void_p * len(exposed))(*exposed)
    # The C call never returns: let Ctrl-C and SIGTERM end the process the default way.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    lib.rpc_start_server(endpoint.encode(), cache_dir.encode() if cache_dir else None,  # type: ignore[attr-defined]
                         threads, len(exposed), array)


def devices_json(devices: Sequence[RemoteDevice]) -> str:
    return json.dumps([asdict(d) for d in devices])


def resolve_devices(endpoints: Sequence[str], names: Sequence[str]) -> list[int]:
    """``ggml_backend_dev_t`` for each of a plan's device names ("gpu:N", "rpc:HOST:PORT#N"),
    registering the RPC servers first; raises ``RpcError`` naming a host that does not answer."""
    served = register(list(endpoints))
    lib = ggml()
    gpus = [d for d in lib.local_devices()
            if lib.dev_type(d) != _DEV_TYPE_CPU and not lib.name(d).startswith("RPC")]  # type: ignore[attr-defined]
    out = []
    for name in names:
        kind, _, rest = name.partition(":")
        if kind == "gpu" and rest.isdigit() and int(rest) < len(gpus):
            out.append(gpus[int(rest)])
            continue
        endpoint, _, index = rest.rpartition("#")
        if kind == "rpc" and endpoint in served and index.isdigit() and int(index) < len(served[endpoint]):
            out.append(served[endpoint][int(index)])
            continue
        raise RpcError(f"no device {name!r} (RPC servers: {', '.join(endpoints) or 'none'})")
    return out
