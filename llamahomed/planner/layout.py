"""Where each layer of a planned load lives: the CPU, this host's GPUs, RPC hosts' devices.

llama.cpp counts ``n_layer + 1`` offloadable positions, the output head last: with
``n_gpu_layers = N`` the first ``n_layer + 1 - N`` layers (and always the input embedding) stay
on the CPU and the last N positions are split over its devices in order, in proportion to
``tensor_split``, so the head moves first. For a plan on this machine's GPUs alone the layout
follows the estimate's older reading (the last N layers; the head only with N > n_layer). The
planner splits by each device's free memory less the reserve (``gpu_layer_split``, the
estimate's own split), and for a load across RPC hosts hands llama.cpp that split as whole
layer counts, so the layout shown is the layout loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llamahomed.core.resources import GPU
from llamahomed.planner.estimate import gpu_layer_split


def _span(start: int, count: int) -> str:
    return "none" if count <= 0 else f"{start}" if count == 1 else f"{start}-{start + count - 1}"


def layer_counts(n_layers: int, n_devices: int, fractions: Sequence[float]) -> list[int]:
    """``n_layers`` repeating layers split over the devices (the estimate's split; equal
    shares where the fractions do not match the devices)."""
    if n_devices == 0:
        return []
    shares = tuple(fractions) if len(fractions) == n_devices and any(fractions) else (1.0,) * n_devices
    return gpu_layer_split(n_layers, shares)


def device_layout(n_layer: int, n_gpu_layers: int, gpus: Sequence[GPU],
                  fractions: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"device", "backend", "layers": "0-11", "n_layers", "output"}, ...]``: CPU first,
    then each device that takes layers, in llama.cpp's order."""
    ngl = n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    if not gpus or ngl == 0:
        return [{"device": "CPU", "backend": "cpu", "layers": _span(0, n_layer),
                 "n_layers": n_layer, "output": True}]
    head_first = any(g.backend == "rpc" for g in gpus)
    first = n_layer + 1 - ngl if head_first else n_layer - min(ngl, n_layer)
    out_remote = head_first or ngl > n_layer
    counts = layer_counts(n_layer - first, len(gpus), fractions)
    rows = [{"device": "CPU", "backend": "cpu", "layers": _span(0, first), "n_layers": first,
             "output": not out_remote}]
    start = first
    for i, (gpu, count) in enumerate(zip(gpus, counts)):
        row: dict[str, Any] = {"device": gpu.name, "backend": gpu.backend,
                               "layers": _span(start, count), "n_layers": count,
                               "output": out_remote and i == len(gpus) - 1}
        if gpu.endpoint:
            row["endpoint"] = gpu.endpoint
        rows.append(row)
        start += count
    return rows


def tensor_split(layout: Sequence[dict[str, Any]]) -> tuple[float, ...]:
    """llama.cpp's ``tensor_split`` for a layout: layers per device, the output head as one."""
    return tuple(float(r["n_layers"] + (1 if r["output"] else 0)) for r in layout[1:])
