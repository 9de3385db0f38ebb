"""GET/HEAD / (liveness), GET /api/version, GET /api/tags, POST /api/show, GET /api/ps."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from llamahomed import __version__
from llamahomed.engine.handle import WorkerHandle
from llamahomed.http.handlers.ollama.names import LATEST, digest, listed_names, resolve
from llamahomed.http.handlers.ollama.schemas import ModelRequest
from llamahomed.http.keys import INFERENCE
from llamahomed.http.render.ollama import timestamp
from llamahomed.http.schemas import parse_body
from llamahomed.registry.store import ModelEntry
from llamahomed.service.inference import InferenceService

OLLAMA_API_VERSION = "0.12.0"
"""The Ollama release whose API shapes these routes follow (what ``/api/version`` says)."""
FOREVER_S = 292 * 365 * 86400  # Ollama's "never" (Go's largest duration) as an expiry
_MAX_LISTED_ARRAY = 64


async def root(request: web.Request) -> web.Response:
    """What Ollama answers on ``/``: clients probe it to see that a server is there."""
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_API_VERSION, "llamahome": __version__})


def details(entry: ModelEntry) -> dict[str, Any]:
    family = entry.info.architecture
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": entry.parameters, "quantization_level": entry.quantization}


def _modified(entry: ModelEntry) -> str:
    try:
        return timestamp(entry.path.stat().st_mtime)
    except OSError:
        return timestamp(0)


def _model(name: str, entry: ModelEntry) -> dict[str, Any]:
    return {"name": name, "model": name, "modified_at": _modified(entry), "size": entry.size,
            "digest": digest(entry), "details": details(entry)}


async def tags(request: web.Request) -> web.Response:
    groups = await asyncio.to_thread(request.app[INFERENCE].registry.models)
    return web.json_response({"models": [_model(n, e) for n, e in listed_names(groups)]})


def capabilities(entry: ModelEntry) -> list[str]:
    """Ollama's words for what the model does ("tools" once tool calling is wired here)."""
    if entry.info.pooling_type:
        return ["embedding"]
    return ["completion"]


def _model_info(entry: ModelEntry, verbose: bool) -> dict[str, Any]:
    """The GGUF's metadata (Ollama's ``model_info``); big arrays only with ``verbose``."""
    info: dict[str, Any] = {"general.parameter_count": entry.info.n_params}
    for key, value in entry.info.metadata.items():
        if key == "tokenizer.chat_template":
            continue
        if isinstance(value, (str, int, float, bool)):
            info[key] = value
        elif isinstance(value, list) and (verbose or len(value) <= _MAX_LISTED_ARRAY):
            info[key] = value
        else:
            info[key] = None
    return info


def _parameters(service: InferenceService, entry: ModelEntry) -> str:
    """The defaults a request gets, as Ollama's ``parameters`` text."""
    defaults = service.config.settings.model_settings
    n_ctx = service.config.settings.system_settings.n_ctx
    if entry.info.context_length:
        n_ctx = min(n_ctx, entry.info.context_length)
    values = {"num_ctx": n_ctx, "num_predict": defaults.max_tokens,
              "temperature": defaults.temperature, "top_k": defaults.top_k,
              "top_p": defaults.top_p, "repeat_penalty": defaults.repeat_penalty}
    return "\n".join(f"{key:<30} {value}" for key, value in values.items())


async def show(request: web.Request) -> web.Response:
    body = await parse_body(request, ModelRequest)
    service = request.app[INFERENCE]
    _, entries = await resolve(service, body.which)
    entry = entries[0]
    template = entry.info.chat_template or "{{ .Prompt }}"
    return web.json_response({
        "modelfile": f"# Served by LlamaHome from its model store\nFROM {entry.path.name}\n",
        "parameters": _parameters(service, entry), "template": template,
        "details": details(entry), "model_info": _model_info(entry, body.verbose),
        "capabilities": capabilities(entry), "modified_at": _modified(entry)})


def _sizes(worker: WorkerHandle, entry: ModelEntry | None) -> tuple[int, int]:
    """(bytes the model holds in all, bytes of them in GPU memory) from llama.cpp's buffers."""
    buffers = worker.info.get("buffers") or {}
    total = vram = 0
    for device, parts in buffers.items():
        held = sum(int(v) for v in parts.values()) if isinstance(parts, dict) else 0
        total += held
        if device != "CPU":
            vram += held
    return (total or (entry.size if entry else 0)), vram


async def ps(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    pool = service.pool
    groups = await asyncio.to_thread(service.registry.models)
    models = []
    for model_id, worker in pool.workers().items():
        entries = groups.get(model_id, [])
        entry = next((e for e in entries if str(e.path) == worker.config.model_path), None)
        if entry is None:
            name = f"{model_id}:{Path(worker.config.model_path).stem}"
        else:
            name = f"{model_id}:{LATEST}" if entry is entries[0] else entry.variant_id
        size, vram = _sizes(worker, entry)
        keep = pool.keep_alive_of(worker)  # busy: its clock starts when it goes idle
        expires = None if keep < 0 else pool.expires_at(worker) or time.time() + keep
        models.append({
            "name": name, "model": name, "size": size, "size_vram": vram,
            "digest": digest(entry) if entry else "",
            "details": details(entry) if entry else {},
            "expires_at": timestamp(expires if expires is not None else
                                    time.time() + FOREVER_S),
            "context_length": worker.config.n_ctx})
    return web.json_response({"models": models})

