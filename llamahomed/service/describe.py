"""A model as the API guide shows it, with its variants and the plan for this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llamahomed.core.resources import Machine
from llamahomed.core.settings import format_size
from llamahomed.planner import Option, Plan
from llamahomed.registry.store import ModelEntry

if TYPE_CHECKING:
    from llamahomed.service.inference import InferenceService


def _variant_option(result: Plan, entry: ModelEntry) -> Option | None:
    """The best way the plan found to load this one variant (fitting first, most on the GPU)."""
    mine = [o for o in result.options if o.candidate.ref is entry]
    if not mine:
        return None
    rank = {"gpu": 0, "partial": 1, "cpu": 2}
    return min(mine, key=lambda o: (not o.fits, -o.params.n_ctx, rank[o.placement],
                                    -o.params.n_gpu_layers, o.params.kv_type != "f16"))


def describe(service: InferenceService, entries: list[ModelEntry], machine: Machine, *,
             detail: bool) -> dict[str, Any]:
    """A model as the guide shows it, plus its variants and the plan for this machine."""
    result = service.plan(entries, machine)
    worker = service.pool.workers().get(entries[0].id)
    loaded = next((e for e in entries if worker and str(e.path) == worker.config.model_path), None)
    chosen = result.choice.candidate.ref if result.choice else None
    entry: ModelEntry = loaded or chosen or entries[0]
    required = result.memory_required
    data: dict[str, Any] = {
        "id": entry.id, "name": entry.name, "version": entry.version,
        "parameters": entry.parameters, "context_length": entry.info.context_length,
        "quantization": entry.quantization, "size": entry.size,
        "capabilities": entry.capabilities, "loaded": worker is not None,
        "selected_variant": chosen.variant_id if chosen else None,
        "memory_required": format_size(required) if required is not None else None,
    }
    if worker is not None:
        data.update(running=worker.admission.running, queued=worker.admission.waiting,
                    **service.scheduler.state(worker))
    if not detail:
        return data
    plan_data = result.to_dict()
    plan_data.pop("options")
    plan_data.pop("machine")
    variants = []
    for v in entries:
        option = _variant_option(result, v)
        variants.append({
            "id": v.variant_id, "quantization": v.quantization, "file": v.path.name,
            "size": v.size, "selected": v is chosen, "loaded": v is loaded,
            "bits_per_weight": option.to_dict()["bits_per_weight"] if option else None,
            "fits": option.fits if option else False,
            "placement": option.placement if option else None,
            "memory_required": format_size(option.estimate.total) if option else None,
            "memory_required_bytes": option.estimate.total if option else None})
    data.update({
        "architecture": entry.info.architecture,
        "family": entry.catalog.family if entry.catalog else None, "file": entry.path.name,
        "performance": {"tokens_per_second": service.performance.tokens_per_second(entry),
                        "memory_required": data["memory_required"]},
        "memory": result.choice.estimate.to_dict() if result.choice else None,
        "plan": plan_data, "variants": variants,
        "runtime": ({"pid": worker.pid, "running": worker.admission.running,
                     "queued": worker.admission.waiting, "slots": worker.admission.slots,
                     **worker.info} if worker is not None else None),
    })
    return data
