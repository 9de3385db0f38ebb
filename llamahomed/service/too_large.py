"""A model that fits nowhere: the 507 that says what would, and ``auto_quantize``'s remedy."""

from __future__ import annotations

from typing import Any

import structlog

from llamahomed.core.errors import ModelTooLarge
from llamahomed.planner import Plan
from llamahomed.registry.store import ModelEntry

log = structlog.get_logger(__name__)


def proposal(entries: list[ModelEntry], result: Plan) -> tuple[ModelEntry, str] | None:
    """A smaller variant ``llamahomed quantize`` could make that would fit, if any: the
    weights may take the memory budget less what the smallest option needs besides them."""
    from llamahomed.registry.quantize import propose_quantization

    details = result.details
    source = min(entries, key=lambda e: e.size)
    if "needed_bytes" not in details:
        return None
    gpus = details.get("gpu_budget_bytes") or []
    budget = int(details.get("ram_budget_bytes") or 0) + sum(
        int(b) for b in (gpus if isinstance(gpus, list) else [gpus]))
    target = budget - max(0, int(details["needed_bytes"]) - source.size)
    proposed = propose_quantization(source, target) if target > 0 else None
    return (source, proposed) if proposed else None


def auto_quantize(settings: Any, entries: list[ModelEntry], result: Plan) -> bool:
    """With ``auto_quantize`` on, make the proposed smaller variant; whether one was made."""
    if not settings.system_settings.auto_quantize:
        return False
    found = proposal(entries, result)
    if found is None:
        return False
    from llamahomed.registry.quantize import QUANT_TYPES, quantize_model

    source, name = found
    log.info("auto_quantize", model=source.id, source=source.quantization, target=name)
    quantize_model(source, QUANT_TYPES[name], settings.models_path)
    return True


def too_large(entries: list[ModelEntry], result: Plan) -> ModelTooLarge:
    """The refusal, with the quantization that would fit when there is one."""
    details: dict[str, Any] = {"model": entries[0].id, **result.details}
    message = result.refusal
    found = proposal(entries, result)
    if found is not None:
        source, name = found
        details["proposed_quantization"] = name
        message += (f". A {name} variant would fit: run `llamahomed quantize {source.id} "
                    f"{name}`, or set system_settings.auto_quantize to make it on demand")
    return ModelTooLarge(message, details=details)
