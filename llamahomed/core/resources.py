"""What this machine has, read on demand: CPU, RAM, NVIDIA GPUs (NVML) and llama.cpp's devices.

Every reading is cheap (no process is started, nothing is loaded) and never raises: a missing
NVML library, a driver error or a llama.cpp build without a GPU backend gives a machine without
GPUs and a note saying why. A :class:`Machine` can also be built by hand (``simulated_machine``)
so that the planner can plan for any machine (``llamahomed plan --ram 16GiB --vram 8GiB``).

Apple silicon has one memory pool: the GPU (Metal) may use a bounded share of RAM
(``apple_gpu_budget``), and what the GPU takes the CPU does not have.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

__all__ = ["GPU", "Machine", "apple_gpu_budget", "read_llama_devices", "read_machine",
           "read_nvml", "simulated_machine"]

GiB = 2**30
MiB = 2**20


@dataclass(frozen=True)
class GPU:
    """One accelerator as the planner sees it; memory in bytes."""

    index: int
    name: str
    backend: str  # "cuda", "metal", "vulkan", ...
    total: int
    free: int
    used: int = 0
    utilization: int | None = None  # percent
    temperature: int | None = None  # degrees Celsius
    unified: bool = False  # shares RAM with the CPU (Apple silicon)
    endpoint: str = ""  # a ggml RPC server's device: "host:port#N" (backend "rpc")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "backend": self.backend,
                "total_bytes": self.total, "free_bytes": self.free, "used_bytes": self.used,
                "utilization": self.utilization, "temperature": self.temperature,
                "unified": self.unified, **({"endpoint": self.endpoint} if self.endpoint else {})}


@dataclass(frozen=True)
class Machine:
    """CPU, RAM and GPUs at one moment (or a simulated machine)."""

    cpu_physical: int
    cpu_logical: int
    ram_total: int
    ram_available: int
    gpus: tuple[GPU, ...] = ()
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    apple: bool = False
    simulated: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def gpu_free(self) -> int:
        return sum(g.free for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": {"physical_cores": self.cpu_physical, "logical_cores": self.cpu_logical,
                        "load_average": list(self.load_average)},
                "ram": {"total_bytes": self.ram_total, "available_bytes": self.ram_available},
                "gpus": [g.to_dict() for g in self.gpus], "apple_unified_memory": self.apple,
                "simulated": self.simulated, "notes": list(self.notes)}


def apple_gpu_budget(ram_total: int) -> int:
    """The share of unified memory Metal lets one process wire for the GPU.

    macOS reports it as ``recommendedMaxWorkingSetSize``: about two thirds of RAM on machines up
    to 36 GiB and three quarters above. We use the same bounds when llama.cpp cannot tell us.
    """
    share = 0.75 if ram_total > 36 * GiB else 2 / 3
    return int(ram_total * share)


# --- NVML ---------------------------------------------------------------------------------------

def _import_nvml() -> Any:
    import pynvml  # nvidia-ml-py

    return pynvml


def read_nvml(load: Callable[[], Any] = _import_nvml) -> tuple[list[GPU], str | None]:
    """Every NVIDIA GPU through NVML, or ``([], why not)``. Never raises."""
    try:
        nvml = load()
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, driver errors
        return [], f"NVML unavailable ({type(exc).__name__}: {exc})"
    gpus: list[GPU] = []
    try:
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            util = _optional(nvml.nvmlDeviceGetUtilizationRates, handle, "gpu")
            temp = _optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            gpus.append(GPU(index=i, name=name.decode() if isinstance(name, bytes) else str(name),
                            backend="cuda", total=int(mem.total), free=int(mem.free),
                            used=int(mem.used), utilization=util, temperature=temp))
    except Exception as exc:  # noqa: BLE001
        return [], f"NVML error while reading GPUs ({type(exc).__name__}: {exc})"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - nothing to do about a failed shutdown
            pass
    return gpus, None if gpus else "NVML found no NVIDIA GPU"


def _optional(read: Callable[..., Any], handle: Any, arg: Any) -> int | None:
    """``read(handle, arg)`` as an int (for utilization: its ``arg`` attribute), else None."""
    try:
        if isinstance(arg, str):
            return int(getattr(read(handle), arg))
        return int(read(handle, arg))
    except Exception:  # noqa: BLE001 - some GPUs do not report utilization or temperature
        return None


# --- llama.cpp's own device list (covers Metal, Vulkan, ...) --------------------------------------

_DEV_TYPE_GPU = 1  # enum ggml_backend_dev_type: CPU=0, GPU=1, ACCEL=2 (IGPU=3 in newer ggml)
_DEV_TYPE_IGPU = 3


def _llama_lib() -> Any:
    import llama_cpp.llama_cpp as bindings

    return bindings._lib


def read_llama_devices(load: Callable[[], Any] = _llama_lib) -> tuple[list[GPU], str | None]:
    """GPUs that this llama.cpp build can use, via ``ggml_backend_dev_*``; never raises."""
    try:
        lib = load()
        count, get = lib.ggml_backend_dev_count, lib.ggml_backend_dev_get
        name, desc = lib.ggml_backend_dev_name, lib.ggml_backend_dev_description
        dev_type, memory = lib.ggml_backend_dev_type, lib.ggml_backend_dev_memory
    except Exception as exc:  # noqa: BLE001 - llama_cpp missing, or a build without these symbols
        return [], f"llama.cpp device list unavailable ({type(exc).__name__}: {exc})"
    count.restype, count.argtypes = ctypes.c_size_t, []
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    for fn in (name, desc):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    dev_type.restype, dev_type.argtypes = ctypes.c_int, [ctypes.c_void_p]
    memory.restype = None
    memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    gpus: list[GPU] = []
    for i in range(int(count())):
        dev = get(i)
        kind = int(dev_type(dev))
        if kind not in (_DEV_TYPE_GPU, _DEV_TYPE_IGPU):
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        dev_name = (name(dev) or b"").decode(errors="replace")
        if not dev_name.upper().startswith("CUDA"):  # CUDA: NVML reads it without a context
            memory(dev, ctypes.byref(free), ctypes.byref(total))
        backend = "metal" if dev_name.lower().startswith("metal") else dev_name.rstrip("0123456789").lower()
        gpus.append(GPU(index=len(gpus), name=(desc(dev) or b"").decode(errors="replace") or dev_name,
                        backend=backend or "gpu", total=int(total.value), free=int(free.value),
                        used=int(total.value - free.value), unified=backend == "metal"))
    return gpus, None if gpus else "this llama.cpp build has no GPU backend (CPU only)"


_devices_lock = threading.Lock()


def llama_devices_isolated(timeout: float = 60.0) -> tuple[list[GPU], str | None]:
    """``read_llama_devices`` in a child process, once per process (cached; a call while the
    first runs waits for it: the daemon starts one in the background at start)."""
    with _devices_lock:
        return _llama_devices_child(timeout)


@functools.lru_cache(maxsize=1)
def _llama_devices_child(timeout: float) -> tuple[list[GPU], str | None]:
    """``read_llama_devices`` in a child process.

    The daemon keeps llama.cpp out of its own process (a crash there would take the daemon
    down, and a GPU backend would hold memory there); the device list does not change while it
    runs. Free memory of GPUs comes from NVML (CUDA) or the unified-memory budget (Metal).
    """
    code = ("import json; from dataclasses import asdict; "
            "from llamahomed.core.resources import read_llama_devices; "
            "gpus, why = read_llama_devices(); "
            "print(json.dumps({'gpus': [asdict(g) for g in gpus], 'why': why}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=timeout, check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        return [GPU(**g) for g in data["gpus"]], data["why"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError, TypeError) as exc:
        return [], f"llama.cpp device list unavailable ({type(exc).__name__})"


# --- the whole machine ----------------------------------------------------------------------------

def _is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def read_machine(*, nvml: Callable[[], Any] = _import_nvml,
                 llama: Callable[[], tuple[list[GPU], str | None]] | None = llama_devices_isolated,
                 ) -> Machine:
    """Read this machine now: psutil and NVML each time, llama.cpp's device list from ``llama``
    (default: read once in a child process). Tests pass stand-ins to simulate failures."""
    mem = psutil.virtual_memory()
    try:
        load = tuple(float(x) for x in os.getloadavg())
    except OSError:
        load = (0.0, 0.0, 0.0)
    notes: list[str] = []
    gpus, why = read_nvml(nvml)
    llama_gpus: list[GPU] = []
    if llama is not None:
        llama_gpus, llama_why = llama()
    else:
        llama_why = "llama.cpp device list not read"
    cuda_in_llama = any(g.backend == "cuda" for g in llama_gpus)
    if gpus and llama is not None and not cuda_in_llama:
        notes.append(f"{len(gpus)} NVIDIA GPU(s) found by NVML, but this llama.cpp build has no "
                     "CUDA backend: planning for the CPU (rebuild llama-cpp-python with "
                     "CMAKE_ARGS=-DGGML_CUDA=on to use them)")
        gpus = []
    elif why:
        notes.append(why)
    apple = _is_apple_silicon()
    others = [g for g in llama_gpus if g.backend != "cuda"]
    if others and not gpus:
        if apple:
            budget = apple_gpu_budget(mem.total)
            others = [replace(g, unified=True, total=min(g.total or budget, budget),
                              free=min(g.total or budget, budget, int(mem.available)))
                      for g in others]
        gpus = others
        notes.append(f"using llama.cpp's {others[0].backend} device(s)")
    elif not gpus:
        notes.append(llama_why or "no GPU")
    return Machine(cpu_physical=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
                   cpu_logical=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
                   ram_total=int(mem.total), ram_available=int(mem.available),
                   gpus=tuple(gpus), load_average=(load[0], load[1], load[2]), apple=apple,
                   notes=tuple(notes))


def simulated_machine(*, ram: int, vram: int = 0, gpus: int = 1, apple: bool = False,
                      cores: int = 8, gpu_name: str | None = None) -> Machine:
    """A machine that is not this one: ``ram`` bytes of RAM, ``gpus`` GPUs of ``vram`` each.

    With ``apple`` the GPU is Metal on unified memory: its budget is a share of ``ram``
    (``vram`` is ignored unless given, then it caps that budget).
    """
    devices: tuple[GPU, ...] = ()
    if apple:
        budget = apple_gpu_budget(ram) if not vram else min(vram, apple_gpu_budget(ram))
        devices = (GPU(0, gpu_name or "Apple GPU (simulated)", "metal", budget, budget,
                       unified=True),)
    elif vram > 0 and gpus > 0:
        devices = tuple(GPU(i, gpu_name or "NVIDIA GPU (simulated)", "cuda", vram, vram)
                        for i in range(gpus))
    return Machine(cpu_physical=cores, cpu_logical=cores * (1 if apple else 2), ram_total=ram,
                   ram_available=ram, gpus=devices, apple=apple, simulated=True,
                   notes=("simulated machine",))
