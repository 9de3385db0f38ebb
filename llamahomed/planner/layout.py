"""Where each layer of a planned load lives: the CPU, this host's GPUs, RPC hosts' devices.

llama.cpp keeps the first ``n_layer - n_gpu_layers`` layers (and the input embedding) on the
CPU and splits the rest over its devices in order, in proportion to ``tensor_split``; with
``n_gpu_layers > n_layer`` the output head goes to the last device. The planner splits by each
device's free memory less the reserve (``gpu_layer_split``, the estimate's own split), and for a
load across RPC hosts hands llama.cpp that split as whole layer counts, so the layout shown is
the layout loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llamahomed.core.resources import GPU
from llamahomed.planner.estimate import gpu_layer_split


def _span(start: int, count: int) -> str:
    return "none" if count <= 0 else f"{start}" if count == 1 else f"{start}-{start + count - 1}"


def layer_counts(n_layer: int, n_gpu_layers: int, n_devices: int,
                 fractions: Sequence[float]) -> list[int]:
    """Repeating layers per device (the estimate's split; equal shares without fractions)."""
    if n_devices == 0:
        return []
    shares = tuple(fractions) if len(fractions) == n_devices and any(fractions) else (1.0,) * n_devices
    ngl = n_layer + 1 if n_gpu_layers < 0 else n_gpu_layers
    return gpu_layer_split(min(ngl, n_layer), shares)


def device_layout(n_layer: int, n_gpu_layers: int, gpus: Sequence[GPU],
                  fractions: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"device", "backend", "layers": "0-11", "n_layers", "output"}, ...]``: CPU first,
    then each device that takes layers, in llama.cpp's order."""
    ngl = n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    if not gpus or ngl == 0:
        return [{"device": "CPU", "backend": "cpu", "layers": _span(0, n_layer),
                 "n_layers": n_layer, "output": True}]
    counts = layer_counts(n_layer, ngl, len(gpus), fractions)
    first = n_layer - min(ngl, n_layer)
    rows = [{"device": "CPU", "backend": "cpu", "layers": _span(0, first), "n_layers": first,
             "output": ngl <= n_layer}]
    start = first
    for i, (gpu, count) in enumerate(zip(gpus, counts)):
        row: dict[str, Any] = {"device": gpu.name, "backend": gpu.backend,
                               "layers": _span(start, count), "n_layers": count,
                               "output": ngl > n_layer and i == len(gpus) - 1}
        if gpu.endpoint:
            row["endpoint"] = gpu.endpoint
        rows.append(row)
        start += count
    return rows


def tensor_split(layout: Sequence[dict[str, Any]]) -> tuple[float, ...]:
    """llama.cpp's ``tensor_split`` for a layout: layers per device, the output head as one."""
    return tuple(float(r["n_layers"] + (1 if r["output"] else 0)) for r in layout[1:])
