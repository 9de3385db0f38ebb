"""A model's shape for memory planning, read from its GGUF header (or built for a test machine).

Only what llama.cpp's buffer sizes depend on: the real bytes of every layer's tensors, the input
embedding (always kept on the CPU), the output head (offloaded last, duplicated from the
embedding when the model ties them), attention geometry per layer (KV heads, key/value widths,
which layers use a sliding window) and the vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llamahomed.registry.gguf_meta import GGML_TYPES, GGUFInfo

_BLOCK = re.compile(r"^blk\.(\d+)\.")
_QUANT_TYPES = {t.name for t in GGML_TYPES.values()} - {"F32", "F16", "BF16", "F64"}
# Architectures whose sliding-window layers follow a fixed pattern: every ``period``-th layer
# (the last of each group) attends globally, the others only to the last ``window`` tokens.
_SWA_PERIOD = {"gemma3": 6, "gemma2": 2, "gemma3n": 5, "cohere2": 4}


@dataclass(frozen=True)
class ModelShape:
    """Sizes in bytes; one entry per layer in the per-layer tuples."""

    name: str
    architecture: str
    quantization: str
    layer_bytes: tuple[int, ...]
    embedding_bytes: int        # token_embd: always on the CPU (a get_rows lookup)
    output_bytes: int           # output head incl. final norm; = embedding when tied
    output_tied: bool
    output_quantized: bool
    n_vocab: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: tuple[int, ...]
    key_length: int
    value_length: int
    swa_layers: tuple[bool, ...]
    sliding_window: int
    context_train: int
    n_params: int
    largest_matrix: int         # biggest single layer tensor (op offload copies one at a time)

    @property
    def n_layer(self) -> int:
        return len(self.layer_bytes)

    @property
    def weight_bytes(self) -> int:
        """Bytes of tensor data in the file (the tied head counted once)."""
        return sum(self.layer_bytes) + self.embedding_bytes + (
            0 if self.output_tied else self.output_bytes)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weight_bytes / max(1, self.n_params)

    @classmethod
    def from_info(cls, info: GGUFInfo) -> ModelShape:
        n_layer = info.block_count or 0
        layers = [0] * n_layer
        largest = embd = out = 0
        tied, out_quant, n_vocab = True, False, 0
        for t in info.tensors:
            m = _BLOCK.match(t.name)
            if m and int(m.group(1)) < n_layer:
                layers[int(m.group(1))] += t.nbytes
                largest = max(largest, t.nbytes)
            elif t.name == "token_embd.weight":
                embd, n_vocab = t.nbytes, int(t.shape[-1])
                out_quant = out_quant or (tied and t.type_name in _QUANT_TYPES)
            elif t.name == "output.weight":
                tied, out_quant = False, t.type_name in _QUANT_TYPES
                out += t.nbytes
                n_vocab = n_vocab or int(t.shape[-1])
            else:
                out += t.nbytes  # output_norm, rope factors, ...
        if tied:
            out += embd
        n_head_kv = _per_layer(info, "attention.head_count_kv", info.head_count_kv or 0, n_layer)
        arch = info.architecture
        window = info.sliding_window or 0
        period = _SWA_PERIOD.get(arch) or (info._arch_int("attention.sliding_window_pattern") or 0)
        swa = tuple(bool(window and period and (i + 1) % period) for i in range(n_layer))
        return cls(name=info.name or info.path.stem, architecture=arch,
                   quantization=info.quantization, layer_bytes=tuple(layers),
                   embedding_bytes=embd, output_bytes=out, output_tied=tied,
                   output_quantized=out_quant,
                   n_vocab=n_vocab or int(info.metadata.get(f"{arch}.vocab_size", 32000)),
                   n_embd=info.embedding_length or 0,
                   n_ff=info._arch_int("feed_forward_length") or 4 * (info.embedding_length or 0),
                   n_head=info.head_count or 0, n_head_kv=n_head_kv,
                   key_length=info.key_length or 0, value_length=info.value_length or 0,
                   swa_layers=swa, sliding_window=window,
                   context_train=info.context_length or 0, n_params=info.n_params,
                   largest_matrix=largest)


def _per_layer(info: GGUFInfo, key: str, default: int, n_layer: int) -> tuple[int, ...]:
    value = info.metadata.get(f"{info.architecture}.{key}")
    if isinstance(value, list) and len(value) == n_layer and all(isinstance(v, int) for v in value):
        return tuple(int(v) for v in value)
    return (default,) * n_layer
