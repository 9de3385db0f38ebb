"""The variants a plan weighs: files with a header, or catalog entries known only by size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from llamahomed.planner.shape import ModelShape
from llamahomed.planner.synthetic import LLAMA_SIZES, MIXES, llama_shape


@dataclass(frozen=True)
class Candidate:
    """A variant the planner may pick: a file on disk (shape from its header) or a catalog entry."""

    name: str
    quantization: str
    size: int
    shape: ModelShape | None = None
    ref: Any = None  # the caller's object (ModelEntry, CatalogVariant); not used here
    file_key: str = ""  # "<file name>|<size>" for measurements; empty if not on disk


def quality(candidate: Candidate) -> float:
    """Bits per weight: more is closer to the original model."""
    if candidate.shape is not None:
        return candidate.shape.bits_per_weight
    return _NOMINAL_BPW.get(candidate.quantization.upper(), 0.0)


_NOMINAL_BPW = {"F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56,
                "Q5_K_M": 5.7, "Q5_K_S": 5.5, "Q5_0": 5.5, "Q4_K_M": 4.85, "Q4_K_S": 4.6,
                "Q4_0": 4.55, "IQ4_XS": 4.3, "Q3_K_L": 4.3, "Q3_K_M": 3.9, "Q3_K_S": 3.5,
                "Q2_K": 3.35}


def fill_shapes(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[str]]:
    """Give header-less candidates (catalog variants) a shape scaled from a sibling's header,
    or from a Llama of about their size."""
    known = next((c for c in candidates if c.shape is not None), None)
    out, notes = [], []
    for c in candidates:
        if c.shape is not None:
            out.append(c)
            continue
        if known is not None and known.shape is not None:
            shape = _scaled(known.shape, c.size, c.quantization)
            notes.append(f"{c.name}: no header on disk, sizes scaled from {known.name}")
        else:
            shape = _guessed(c.size, c.quantization)
            notes.append(f"{c.name}: no header on disk, shape guessed from its size")
        out.append(replace(c, shape=shape))
    return out, notes


def _scaled(base: ModelShape, size: int, quantization: str) -> ModelShape:
    f = size / max(1, base.weight_bytes)
    return replace(base, quantization=quantization.upper(),
                   layer_bytes=tuple(int(b * f) for b in base.layer_bytes),
                   embedding_bytes=int(base.embedding_bytes * f),
                   output_bytes=int(base.output_bytes * f),
                   largest_matrix=int(base.largest_matrix * f))


def _guessed(size: int, quantization: str) -> ModelShape:
    quant = quantization.upper() if quantization.upper() in MIXES else "Q4_K_M"
    shapes = [llama_shape(s, quant) for s in LLAMA_SIZES]
    best = min(shapes, key=lambda s: abs(s.weight_bytes - size))
    return _scaled(best, size, quantization)
