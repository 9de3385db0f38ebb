"""How many bytes llama.cpp will allocate for a load, on the CPU and on each GPU.

The estimate mirrors how llama.cpp places a model (``n_gpu_layers`` = the last N layers go to
the GPU, N > n_layer also moves the output head; the input embedding always stays on the CPU;
layers are split across GPUs in proportion to their free memory) and what it allocates:

* weights: the real tensor bytes of every layer (GGUF header), embedding, output head;
* KV cache: per layer ``cells x n_head_kv x (key_length + value_length) x bytes(kv type)``,
  cells = n_ctx padded to 256; sliding-window layers keep only ``window + n_ubatch`` cells
  (one window per sequence) unless the full-size SWA cache is on (the batched engine's default, for its prompt cache);
* output buffer: ``n_vocab x 4 x n_seq`` bytes of logits on the host;
* compute buffers: the worst-case ubatch graph. The logits of a full ubatch
  (``4 x n_ubatch x n_vocab``) dominate, plus activations; without flash attention the
  attention scores grow with the context (on the CPU they share memory with the logits);
* runtime overhead outside those buffers (CPU: threads and graph metadata; CUDA: context,
  cuBLAS handles and its memory pool).

The CUDA terms are calibrated on the H100 measurements in the GPU README (see
docs/Planner.md); the CPU terms reproduce llama.cpp's reported buffer sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamahomed.planner.shape import ModelShape

MiB = 2**20
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
                 "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32}
CELL_PAD = 256
CPU_RUNTIME = 32 * MiB          # worker threads, graph metadata, libraries' heap
GPU_RUNTIME = {"cuda": 40 * MiB, "metal": 32 * MiB,  # beyond the buffers (H100 fit for CUDA)
               "rpc": 4 * MiB}  # an RPC server's own runtime is outside the memory it reports
GPU_RUNTIME_DEFAULT = 64 * MiB


@dataclass(frozen=True)
class LoadParams:
    """The llama.cpp settings a load uses (what the estimate depends on)."""

    n_ctx: int
    n_gpu_layers: int = 0        # 0..n_layer+1; n_layer+1 (or -1) puts the output head there too
    n_ubatch: int = 512
    n_seq: int = 1
    kv_type: str = "f16"
    flash_attn: bool = True
    swa_full: bool = True
    kv_unified: bool = True

    def key(self) -> str:
        return (f"ctx={self.n_ctx},ngl={self.n_gpu_layers},ub={self.n_ubatch},seq={self.n_seq},"
                f"kv={self.kv_type},fa={int(self.flash_attn)},swa_full={int(self.swa_full)}")


@dataclass(frozen=True)
class DevicePart:
    """Bytes one device holds for a load."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    overhead: int = 0

    @property
    def buffers(self) -> int:
        """What llama.cpp allocates as buffers (weights, KV, output and compute)."""
        return self.weights + self.kv_cache + self.compute

    @property
    def total(self) -> int:
        return self.buffers + self.overhead

    def to_dict(self) -> dict[str, int]:
        return {"weights_bytes": self.weights, "kv_cache_bytes": self.kv_cache,
                "compute_bytes": self.compute, "overhead_bytes": self.overhead,
                "total_bytes": self.total}


@dataclass(frozen=True)
class Estimate:
    """A load's memory: the CPU (RAM) part and one part per GPU used."""

    cpu: DevicePart
    gpus: tuple[DevicePart, ...] = field(default=())
    measured: bool = False

    @property
    def total(self) -> int:
        return self.cpu.total + sum(g.total for g in self.gpus)

    @property
    def vram(self) -> int:
        return sum(g.total for g in self.gpus)

    @property
    def buffers(self) -> int:
        return self.cpu.buffers + sum(g.buffers for g in self.gpus)

    def to_dict(self) -> dict[str, object]:
        return {"total_bytes": self.total, "ram_bytes": self.cpu.total, "vram_bytes": self.vram,
                "cpu": self.cpu.to_dict(), "gpus": [g.to_dict() for g in self.gpus],
                "measured": self.measured}


def _pad(n: int, to: int = CELL_PAD) -> int:
    return -(-n // to) * to


def kv_layer_bytes(shape: ModelShape, layer: int, p: LoadParams) -> int:
    """KV cache bytes of one layer."""
    cells = _pad(p.n_ctx)
    if shape.swa_layers[layer] and not p.swa_full:
        # llama.cpp: a unified cache keeps a window for each of the n_seq sequences
        seqs = p.n_seq if p.kv_unified else 1
        cells = min(cells, _pad(shape.sliding_window * seqs + p.n_ubatch))
    width = shape.n_head_kv[layer] * (shape.key_length + shape.value_length)
    return int(cells * width * KV_TYPE_BYTES[p.kv_type])


def kv_cache_bytes(shape: ModelShape, p: LoadParams) -> int:
    return sum(kv_layer_bytes(shape, i, p) for i in range(shape.n_layer))


def _activations(shape: ModelShape, tokens: int) -> int:
    """Activations of the ubatch graph besides the logits (residual, norms, FFN)."""
    return 4 * tokens * (2 * shape.n_embd + 2 * shape.n_ff)


def _scores(shape: ModelShape, p: LoadParams, tokens: int, backend: str) -> int:
    """Attention scores of one layer, which only exist without flash attention."""
    if p.flash_attn:
        return 0
    # KQ of one layer: F32 on the CPU, F16 through cuBLAS on CUDA. On an RPC device KQ and its
    # softmax are two buffers (measured: 2 x 4 bytes per score on a CPU-backed RPC server).
    per_score = {"cuda": 2, "rpc": 8}.get(backend, 4)
    return per_score * tokens * _pad(p.n_ctx) * shape.n_head


def gpu_layer_split(n_gpu: int, fractions: tuple[float, ...]) -> list[int]:
    """Layers per GPU, in proportion to ``fractions`` (llama.cpp splits by free memory)."""
    total = sum(fractions) or 1.0
    counts, done, acc = [], 0, 0.0
    for f in fractions:
        acc += f / total
        upto = round(acc * n_gpu)
        counts.append(upto - done)
        done = upto
    return counts


def estimate(shape: ModelShape, p: LoadParams, *, backend: str = "cpu",
             gpu_fractions: tuple[float, ...] = (1.0,)) -> Estimate:
    """Bytes a load takes: CPU part and one part per GPU (none for a CPU-only load)."""
    n_layer = shape.n_layer
    ngl = n_layer + 1 if p.n_gpu_layers < 0 else min(p.n_gpu_layers, n_layer + 1)
    if backend == "cpu":
        ngl = 0
    tokens = min(p.n_ubatch, _pad(p.n_ctx))
    first_gpu = n_layer - min(ngl, n_layer)
    out_on_gpu = ngl > n_layer
    if backend == "rpc" and ngl > 0:
        # llama.cpp's own rule, followed exactly for loads across RPC hosts (whose layout the
        # planner hands llama.cpp as whole layer counts): the output head is the last of
        # n_layer + 1 offloadable positions, so it moves first and n_gpu_layers = N puts the
        # head and the last N - 1 layers on the devices.
        first_gpu, out_on_gpu = n_layer + 1 - ngl, True
    logits = 4 * tokens * shape.n_vocab
    output_buffer = 4 * shape.n_vocab * p.n_seq

    cpu_layers = range(first_gpu)
    cpu_weights = sum(shape.layer_bytes[i] for i in cpu_layers) + shape.embedding_bytes
    if not out_on_gpu and not shape.output_tied:
        cpu_weights += shape.output_bytes
    elif not out_on_gpu:  # tied head on the CPU: the embedding is the head, plus its norm
        cpu_weights += shape.output_bytes - shape.embedding_bytes
    cpu_kv = sum(kv_layer_bytes(shape, i, p) for i in cpu_layers)
    if ngl == 0 and backend in ("cpu", "metal", "rpc"):
        # The graph allocator reuses the scores' memory for the logits: the larger one counts.
        cpu_compute = max(logits, _scores(shape, p, tokens, "cpu")) + _activations(shape, tokens)
        cpu = DevicePart(cpu_weights, cpu_kv, cpu_compute + output_buffer, CPU_RUNTIME)
        return Estimate(cpu)

    # Partial or full offload: the CPU keeps a graph for its layers (and the head if there).
    cpu_compute = max(0 if out_on_gpu else logits, _scores(shape, p, tokens, "cpu") if first_gpu else 0)
    cpu_compute += _activations(shape, tokens) if first_gpu else 0
    if backend == "rpc" and not first_gpu:  # measured: the host keeps a layer's graph anyway
        cpu_compute += _activations(shape, tokens) + _scores(shape, p, tokens, "cpu")
    cpu = DevicePart(cpu_weights, cpu_kv, cpu_compute + output_buffer, CPU_RUNTIME)
    if ngl == 0:  # a GPU build with no layers offloaded still runs the head's matmul there
        head = shape.output_bytes if not shape.output_tied else shape.embedding_bytes
        gpu = DevicePart(0, 0, head + logits, GPU_RUNTIME.get(backend, GPU_RUNTIME_DEFAULT))
        return Estimate(cpu, (gpu,))
    split = gpu_layer_split(n_layer - first_gpu, gpu_fractions)
    parts, start = [], first_gpu
    for g, count in enumerate(split):
        layers = range(start, start + count)
        start += count
        last = g == len(split) - 1
        weights = sum(shape.layer_bytes[i] for i in layers)
        if last and out_on_gpu:
            weights += shape.output_bytes
        kv = sum(kv_layer_bytes(shape, i, p) for i in layers)
        compute = _activations(shape, tokens) + _scores(shape, p, tokens, backend)
        if last:
            compute += _head_compute(shape, p, backend, out_on_gpu, first_gpu, logits)
        parts.append(DevicePart(weights, kv, compute,
                                GPU_RUNTIME.get(backend, GPU_RUNTIME_DEFAULT)))
    return Estimate(cpu, tuple(parts))


def _head_compute(shape: ModelShape, p: LoadParams, backend: str, out_on_gpu: bool,
                  first_gpu: int, logits: int) -> int:
    """GPU compute for the output head.

    Head on the GPU: the ubatch's logits, and with a quantized head on CUDA a second
    logits-sized block that ggml's memory pool keeps for the quantized matmul's temporaries.
    Head on the CPU: llama.cpp offloads big host matmuls to the GPU (op offload), so the GPU
    holds a copy of the head's weights (the largest host matrix); with no layer on the GPU the
    logits are computed there too.
    """
    if out_on_gpu:
        extra = logits if backend == "cuda" and shape.output_quantized else 0
        return logits + extra
    if backend in ("metal", "rpc"):  # unified memory: no copy; RPC devices take no op offload
        return 0
    return shape.output_bytes if not shape.output_tied else shape.embedding_bytes
