"""Ollama's ``model:tag`` names onto LlamaHome's model ids and variants, and back.

An Ollama name is ``name[:tag]``; no tag means ``:latest``. It maps onto the store like this:

    gemma3-270m, gemma3-270m:latest   the model id: the variant the planner picks
    gemma3-270m:q4_k_m                one variant (``id:quantization``)
    gemma3:270m, smollm2:135m         a catalog alias
    mymodel:v2                        the model ``mymodel-v2`` (what ``/api/copy`` and
                                      ``/api/create`` make for a tag that is no quantization)

The listing says each model once as ``id:latest`` (its preferred variant), and each variant of a
model with several as ``id:quantization``. An unknown name is Ollama's 404,
``{"error": "model 'x' not found"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from llamahomed.core.errors import InvalidRequest, ModelNotFound
from llamahomed.registry.store import ModelEntry, slug
from llamahomed.service.inference import InferenceService

LATEST = "latest"
_QUANT_TAG = re.compile(r"^(f32|f16|bf16|q[2-8]_[01k](_[sml])?|q[2-6]_k|iq[1-4]_(xxs|xs|s|m|nl))$")


def split(name: str) -> tuple[str, str]:
    """``(name, tag)``; the tag defaults to ``latest``."""
    base, _, tag = name.strip().partition(":")
    return base, tag or LATEST


def spellings(name: str) -> list[str]:
    """Our names an Ollama name may mean, most literal first."""
    text = name.strip()
    base, tag = split(text)
    if tag == LATEST:
        return [base]
    return [text, f"{base}-{tag}"]


def store_name(name: str, quantization: str) -> tuple[str, str]:
    """``(model id, file stem)`` for a model ``/api/copy`` or ``/api/create`` makes as ``name``
    from a file of ``quantization``; a tag that looks like a quantization must be the file's."""
    base, tag = split(name)
    model_id = slug(base)
    if model_id != base.lower() or ":" in tag:
        raise InvalidRequest(f"invalid model name {name!r}: use letters, digits, '.', '_', '-' "
                             "and one ':' before a tag")
    if tag == LATEST:
        return model_id, model_id
    if _QUANT_TAG.match(tag.lower()):
        if tag.lower() != quantization.lower():
            raise InvalidRequest(f"the tag {tag!r} names a quantization, but the file is "
                                 f"{quantization}; use another tag")
        return model_id, f"{model_id}-{quantization.upper()}"
    return f"{model_id}-{slug(tag)}", f"{model_id}-{slug(tag)}"


def not_found(name: str) -> ModelNotFound:
    return ModelNotFound(f"model '{name}' not found", details={"model": name})


def _resolve(service: InferenceService, name: str) -> tuple[str, list[ModelEntry]]:
    if not name or not name.strip():
        raise InvalidRequest("model is required")
    for ours in spellings(name):
        try:
            return ours, service.candidates(ours)
        except ModelNotFound:
            continue
        except InvalidRequest:
            raise InvalidRequest(f"invalid model name {name[:100]!r}") from None
    raise not_found(name)


async def resolve(service: InferenceService, name: str) -> tuple[str, list[ModelEntry]]:
    """Our model name for an Ollama name and the files it may load (off the event loop)."""
    return await asyncio.to_thread(_resolve, service, name)


def listed_names(groups: dict[str, list[ModelEntry]]) -> list[tuple[str, ModelEntry]]:
    """Every name ``/api/tags`` shows, with the file each one means."""
    names: list[tuple[str, ModelEntry]] = []
    for model_id, entries in groups.items():
        names.append((f"{model_id}:{LATEST}", entries[0]))
        if len(entries) > 1:
            names.extend((entry.variant_id, entry) for entry in entries)
    return names


def digest(entry: ModelEntry) -> str:
    """The file's sha256 where it is known (a verified catalog download); else a digest of the
    file's name, size and time (hashing a many-GB file on every listing is no option)."""
    if entry.variant is not None and entry.variant.sha256 and entry.path.name == entry.variant.file:
        return entry.variant.sha256
    try:
        mtime = entry.path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return hashlib.sha256(f"{entry.path.name}\0{entry.size}\0{mtime}".encode()).hexdigest()
