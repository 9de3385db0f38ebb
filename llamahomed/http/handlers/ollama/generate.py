"""POST /api/generate, /api/chat, /api/embed and /api/embeddings: Ollama's bodies parsed onto
the one ``InferenceService.generate`` / ``embed``, answered by ``http/render/ollama.py``.

Streaming is the default (NDJSON); ``stream: false`` answers one object. An empty prompt (or no
messages) loads the model and answers ``done_reason: "load"``; with ``keep_alive: 0`` it
unloads it instead (``"unload"``). ``keep_alive`` on any request sets how long the model stays
loaded once idle, from then on. /api/chat takes ``tools`` and calls in its history
(``ollama/tools.py``); its answer's calls are parsed out (``http/render/ollama_tools.py``).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llamahomed.core.errors import InvalidRequest
from llamahomed.http.access import is_admin, owner
from llamahomed.http.guard import stream_slot
from llamahomed.http.handlers.ollama.names import resolve
from llamahomed.http.handlers.ollama.schemas import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    GenerationBody,
    keep_alive_seconds,
)
from llamahomed.http.handlers.ollama.tools import link_results, ollama_tool_set, with_tool_fields
from llamahomed.http.keys import CLAIMS, INFERENCE
from llamahomed.http.ratelimit import request_meter
from llamahomed.http.render import ollama as render
from llamahomed.http.render import ollama_tools as render_tools
from llamahomed.http.render.ollama import NDJSON, Body, line, timestamp
from llamahomed.http.schemas import parse_body
from llamahomed.registry.store import ModelEntry
from llamahomed.service.generation import Generation

MAX_EMBED_INPUTS = 256
_FIM_KEYS = (("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id"),
             ("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id"))


def _text(text: str) -> dict[str, Any]:
    return {"response": text}


def _message(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}}


async def generate(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, GenerateRequest)
    body.check()
    ours, entries = await resolve(request.app[INFERENCE], body.model)
    if body.suffix:
        _check_fim(body.model, entries[0])
    options = body.generation_options(ours)  # a bad option is a 400 before anything loads
    if not body.prompt:
        return await _load_or_unload(request, body, ours, _text, chat=False)
    service = request.app[INFERENCE]

    async def start() -> Generation:
        return await service.generate(
            options, prompt=body.prompt, system=body.system, raw=body.raw, n_ctx=body.n_ctx,
            load_options=body.load_options,
            meter=request_meter(request), may_reload=is_admin(request), owner=owner(request),
            keep_alive=body.keep_alive_s)

    return await _answer(request, body, start, _text)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatRequest)
    body.check()
    ours, _ = await resolve(request.app[INFERENCE], body.model)
    options = body.generation_options(ours)
    if not body.messages:
        return await _load_or_unload(request, body, ours, _message, chat=True)
    tools = ollama_tool_set(body.tools, body.choice)
    messages = link_results([with_tool_fields(i, m.for_template(), m.tool_calls)
                             for i, m in enumerate(body.messages)])
    service = request.app[INFERENCE]

    async def start() -> Generation:
        return await service.generate(
            options, messages=messages, n_ctx=body.n_ctx, load_options=body.load_options,
            meter=request_meter(request),
            may_reload=is_admin(request), owner=owner(request), keep_alive=body.keep_alive_s,
            tools=tools)

    if tools is not None and tools.active:
        if body.logprobs:
            raise InvalidRequest("logprobs: not available with tools yet",
                                 details={"errors": [{"field": "logprobs",
                                                      "message": "not with tools"}]})
        if not body.stream:
            return web.json_response(await render_tools.answer(await start(), body.model, tools))
        with stream_slot(request.app, request.get(CLAIMS)):
            return await render_tools.stream(request, await start(), body.model, tools)
    return await _answer(request, body, start, _message)


async def _answer(request: web.Request, body: GenerationBody, start: Any,
                  shape: Body) -> web.StreamResponse:
    if not body.stream:
        return web.json_response(await render.answer(await start(), body.model, shape))
    with stream_slot(request.app, request.get(CLAIMS)):
        return await render.stream(request, await start(), body.model, shape)


async def _load_or_unload(request: web.Request, body: GenerationBody, ours: str, shape: Body, *,
                          chat: bool) -> web.StreamResponse:
    """Ollama's empty request: load the model (``keep_alive: 0``: unload it)."""
    service = request.app[INFERENCE]
    started = time.perf_counter()
    if body.keep_alive_s == 0:
        await service.unload(ours)
        reason = "unload"
    else:
        await service.load(ours, n_ctx=body.n_ctx, load_options=body.load_options,
                           keep_alive=body.keep_alive_s,
                           may_reload=is_admin(request), chat=chat)
        reason = "load"
    data = {"model": body.model, "created_at": timestamp(), **shape(""), "done": True,
            "done_reason": reason}
    if reason == "load":
        data["load_duration"] = data["total_duration"] = int((time.perf_counter() - started) * 1e9)
    if body.stream:
        return web.Response(body=line(data), content_type=NDJSON)
    return web.json_response(data)


def _check_fim(name: str, entry: ModelEntry) -> None:
    """``suffix`` needs a model with fill-in-the-middle tokens; and an engine that builds the
    prompt from them, which this daemon does not do yet."""
    metadata = entry.info.metadata
    has_fim = any(all(key in metadata for key in keys) for keys in _FIM_KEYS)
    why = ("fill-in-the-middle (suffix) is not supported yet" if has_fim else
           f"model '{name}' does not support insert: its GGUF has no fill-in-the-middle tokens")
    raise InvalidRequest(f"suffix: {why}",
                         details={"errors": [{"field": "suffix", "message": why}]})


async def embed(request: web.Request) -> web.Response:
    body = await parse_body(request, EmbedRequest)
    if body.dimensions is not None:
        raise InvalidRequest("dimensions: not supported; the model's own size is used",
                             details={"errors": [{"field": "dimensions", "message": "not supported"}]})
    texts = ([body.input] if body.input else []) if isinstance(body.input, str) else body.input
    if len(texts) > MAX_EMBED_INPUTS or not all(texts):
        raise InvalidRequest(f"input: at most {MAX_EMBED_INPUTS} non-empty strings",
                             details={"errors": [{"field": "input", "message": "empty or too many"}]})
    service = request.app[INFERENCE]
    ours, _ = await resolve(service, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive)
    started = time.perf_counter()
    if not texts:  # Ollama: an empty input loads the model
        await service.load(ours, keep_alive=keep_alive)
        return web.json_response({"model": body.model, "embeddings": []})
    _, done = await service.embed(ours, texts, keep_alive=keep_alive)
    return web.json_response({
        "model": body.model, "embeddings": done.embeddings or [],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "prompt_eval_count": int(done.usage.get("prompt_tokens", 0))})


async def embeddings(request: web.Request) -> web.Response:
    """The older route: ``prompt`` in, ``embedding`` out."""
    body = await parse_body(request, EmbeddingsRequest)
    service = request.app[INFERENCE]
    ours, _ = await resolve(service, body.model)
    keep_alive = keep_alive_seconds(body.keep_alive)
    if not body.prompt:
        await service.load(ours, keep_alive=keep_alive)
        return web.json_response({"embedding": []})
    _, done = await service.embed(ours, [body.prompt], keep_alive=keep_alive)
    return web.json_response({"embedding": (done.embeddings or [[]])[0]})

