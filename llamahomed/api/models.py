"""GET /api/v1/models and /api/v1/models/{model_id}."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from llamahomed.api.access import requires_scope
from llamahomed.api.keys import INFERENCE
from llamahomed.inference import InferenceService
from llamahomed.planner import estimate_memory
from llamahomed.registry.store import ModelEntry
from llamahomed.settings import format_size


def describe(service: InferenceService, entry: ModelEntry, variants: list[ModelEntry],
             *, detail: bool) -> dict[str, Any]:
    """A model as the guide shows it, plus what this daemon knows about it."""
    load = service.load_config(entry)
    memory = estimate_memory(entry.info, load.n_ctx, load.n_batch)
    worker = service.pool.workers().get(entry.id)
    data: dict[str, Any] = {
        "id": entry.id, "name": entry.name, "version": entry.version,
        "parameters": entry.parameters, "context_length": entry.info.context_length,
        "quantization": entry.quantization, "size": entry.size,
        "capabilities": entry.capabilities, "loaded": worker is not None,
    }
    if worker is not None:
        data.update(running=worker.admission.running, queued=worker.admission.waiting)
    if detail:
        data.update({
            "architecture": entry.info.architecture, "family": entry.catalog.family if entry.catalog else None,
            "file": entry.path.name,
            "performance": {"tokens_per_second": service.performance.tokens_per_second(entry),
                            "memory_required": format_size(memory.total)},
            "memory": {"total_bytes": memory.total, "weights_bytes": memory.weights,
                       "kv_cache_bytes": memory.kv_cache, "compute_bytes": memory.compute,
                       "n_ctx": load.n_ctx},
            "variants": [{"quantization": v.quantization, "file": v.path.name, "size": v.size}
                         for v in variants],
            "runtime": ({"pid": worker.pid, "running": worker.admission.running,
                         "queued": worker.admission.waiting, "slots": worker.admission.slots,
                         **worker.info} if worker is not None else None),
        })
    return data


@requires_scope("inference")
async def list_models(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    groups = service.registry.models()
    return web.json_response({"models": [describe(service, entries[0], entries, detail=False)
                                         for entries in groups.values()]})


@requires_scope("inference")
async def get_model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    groups = service.registry.models()
    entry = service.registry.resolve(request.match_info["model_id"], groups)
    return web.json_response(describe(service, entry, groups[entry.id], detail=True))
