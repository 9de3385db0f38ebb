"""Load sizes and load options for a model on this machine.

This first planner sizes a load from the GGUF header (weights + KV cache + compute buffers) and
picks context, threads and GPU layers from settings and the model. The full planner (variants,
NVML/llama.cpp device readings, partial offload, measured allocations) grows here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from llamahomed.registry.gguf_meta import GGUFInfo

MiB = 2**20
_OVERHEAD = 48 * MiB  # llama.cpp context, scheduler and graph bookkeeping outside the big buffers


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead


def effective_context(info: GGUFInfo, requested: int) -> int:
    """The context a model is loaded with: what settings ask, never above what it was trained on."""
    trained = info.context_length or requested
    return max(64, min(requested, trained))


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, bytes_per_value: float = 2.0) -> int:
    """K and V for every layer; sliding-window layers only keep their window."""
    n_layer = info.block_count or 0
    n_kv_heads = info.head_count_kv or info.head_count or 0
    per_token_layer = n_kv_heads * ((info.key_length or 0) + (info.value_length or 0))
    window = info.sliding_window
    swa_layers = 0
    if window and info.architecture.startswith("gemma3"):
        swa_layers = n_layer - n_layer // 6  # gemma 3: five local layers for every global one
    full = (n_layer - swa_layers) * n_ctx
    local = swa_layers * min(n_ctx, (window or 0) + 512)
    return int((full + local) * per_token_layer * bytes_per_value)


def estimate_memory(info: GGUFInfo, n_ctx: int, n_batch: int = 512) -> MemoryEstimate:
    """Bytes a CPU load of this file is expected to take."""
    n_vocab = _vocab_size(info)
    n_embd = info.embedding_length or 0
    n_ubatch = min(n_batch, 512)
    compute = 4 * n_ubatch * (n_vocab + 8 * n_embd) + 4 * n_ctx * n_ubatch
    return MemoryEstimate(weights=info.tensor_bytes, kv_cache=kv_cache_bytes(info, n_ctx),
                          compute=compute, overhead=_OVERHEAD)


def _vocab_size(info: GGUFInfo) -> int:
    for tensor in info.tensors:
        if tensor.name in ("output.weight", "token_embd.weight") and len(tensor.shape) == 2:
            return int(tensor.shape[1])
    return 32000


def default_threads() -> int:
    """Physical cores: llama.cpp decodes no faster on hyper-threads and slower when oversubscribed."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
