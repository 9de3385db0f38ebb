"""The load planner: which variant, how many GPU layers, what context, KV type, batch, threads.

``plan(candidates, machine, request)`` weighs every variant of a model on a machine (real or
simulated, see :mod:`llamahomed.core.resources`) from GGUF header data alone and returns a
:class:`Plan` with the choice, the options it weighed and its reasons. docs/Planner.md explains
the estimate and the order of preference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llamahomed.planner.candidates import Candidate, quality
from llamahomed.planner.choose import Option, Plan, PlanRequest, choose_variant, plan
from llamahomed.planner.estimate import (
    DevicePart,
    Estimate,
    LoadParams,
    estimate,
    kv_cache_bytes,
)
from llamahomed.planner.measured import Measurements, capture_buffers, parse_buffers
from llamahomed.planner.shape import ModelShape
from llamahomed.planner.synthetic import llama_shape

__all__ = ["Candidate", "DevicePart", "Estimate", "LoadParams", "Measurements", "ModelShape",
           "Option", "Plan", "PlanRequest", "candidates_from_entries", "capture_buffers",
           "choose_variant", "estimate", "kv_cache_bytes", "llama_shape", "parse_buffers", "plan",
           "quality"]


def candidates_from_entries(entries: Iterable[Any]) -> list[Candidate]:
    """Candidates for model store entries (``ModelEntry``: ``variant_id``, ``path``, ``info``)."""
    return [Candidate(name=e.variant_id, quantization=e.quantization, size=e.size,
                      shape=ModelShape.from_info(e.info), ref=e,
                      file_key=f"{e.path.name}|{e.size}") for e in entries]
