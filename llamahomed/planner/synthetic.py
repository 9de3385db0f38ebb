"""Model shapes built from header data alone: a Llama of any size at any quantization.

The planner's tests and ``llamahomed plan --shape`` use these to plan 1B/8B/70B models without
multi-gigabyte files. Tensor types follow llama.cpp's quantizer: the ``_M`` mixes give
``attn_v`` and ``ffn_down`` more bits on the first and last eighth of the layers and every third
layer between, and the output head keeps Q6_K (Q8_0 and F16 keep their own type).
"""

from __future__ import annotations

from llamahomed.planner.shape import ModelShape
from llamahomed.registry.gguf_meta import GGML_TYPES

_TYPES = {t.name: t for t in GGML_TYPES.values()}

# quantization -> (base type, type of attn_v/ffn_down on "more bits" layers, output, embedding)
MIXES: dict[str, tuple[str, str, str, str]] = {
    "F16": ("F16", "F16", "F16", "F16"),
    "Q8_0": ("Q8_0", "Q8_0", "Q8_0", "Q8_0"),
    "Q6_K": ("Q6_K", "Q6_K", "Q6_K", "Q6_K"),
    "Q5_K_M": ("Q5_K", "Q6_K", "Q6_K", "Q5_K"),
    "Q4_K_M": ("Q4_K", "Q6_K", "Q6_K", "Q4_K"),
    "Q4_0": ("Q4_0", "Q4_0", "Q6_K", "Q4_0"),
    "Q3_K_M": ("Q3_K", "Q4_K", "Q6_K", "Q3_K"),
    "Q2_K": ("Q2_K", "Q3_K", "Q6_K", "Q2_K"),
}

LLAMA_SIZES: dict[str, dict[str, int]] = {
    # Llama 3.2 1B, Llama 3.1 8B, Llama 3.1 70B (vocab 128256, trained context 131072)
    "1B": {"n_layer": 16, "n_embd": 2048, "n_ff": 8192, "n_head": 32, "n_head_kv": 8},
    "8B": {"n_layer": 32, "n_embd": 4096, "n_ff": 14336, "n_head": 32, "n_head_kv": 8},
    "70B": {"n_layer": 80, "n_embd": 8192, "n_ff": 28672, "n_head": 64, "n_head_kv": 8},
}


def _nbytes(type_name: str, rows: int, cols: int) -> int:
    t = _TYPES[type_name]
    return rows * cols // t.block_size * t.type_size


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_shape(size: str = "1B", quantization: str = "Q4_K_M", *, n_vocab: int = 128256,
                tied: bool = False, context_train: int = 131072, **overrides: int) -> ModelShape:
    """A Llama-architecture shape (``size`` from ``LLAMA_SIZES``, any field overridable)."""
    dims = {**LLAMA_SIZES[size], **overrides}
    n_layer, n_embd, n_ff = dims["n_layer"], dims["n_embd"], dims["n_ff"]
    n_head, n_head_kv = dims["n_head"], dims["n_head_kv"]
    head_dim = n_embd // n_head
    base, more, out_t, emb_t = MIXES[quantization.upper()]
    kv_width = n_head_kv * head_dim
    layers, largest = [], 0
    for i in range(n_layer):
        vd = more if _more_bits(i, n_layer) else base
        mats = [_nbytes(base, n_embd, n_embd), _nbytes(base, n_embd, kv_width),
                _nbytes(vd, n_embd, kv_width), _nbytes(base, n_embd, n_embd),
                _nbytes(base, n_embd, n_ff), _nbytes(base, n_embd, n_ff), _nbytes(vd, n_ff, n_embd)]
        layers.append(sum(mats) + 2 * 4 * n_embd)  # + two F32 norms
        largest = max(largest, *mats)
    embedding = _nbytes(emb_t, n_vocab, n_embd)
    output = (embedding if tied else _nbytes(out_t, n_vocab, n_embd)) + 4 * n_embd
    n_params = n_layer * (2 * n_embd * n_embd + 2 * n_embd * kv_width + 3 * n_embd * n_ff
                          + 2 * n_embd) + n_vocab * n_embd * (1 if tied else 2) + n_embd
    return ModelShape(
        name=f"Llama {size}", architecture="llama", quantization=quantization.upper(),
        layer_bytes=tuple(layers), embedding_bytes=embedding, output_bytes=output,
        output_tied=tied, output_quantized=(emb_t if tied else out_t) not in ("F16", "F32"),
        n_vocab=n_vocab, n_embd=n_embd, n_ff=n_ff, n_head=n_head,
        n_head_kv=(n_head_kv,) * n_layer, key_length=head_dim, value_length=head_dim,
        swa_layers=(False,) * n_layer, sliding_window=0, context_train=context_train,
        n_params=n_params, largest_matrix=largest)
