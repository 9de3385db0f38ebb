"""Every route the daemon serves: method, path, handler, scope, OpenAPI operation.

This table is the one place a route is declared. ``create_app`` installs it on the router, the
auth middleware reads each route's scope from it, and the OpenAPI document is built from it.
A new dialect adds its handler module and its rows here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llamahomed.http import openapi
from llamahomed.http.handlers import (
    access_tokens,
    anthropic,
    anthropic_schema,
    console,
    manage,
    metrics,
    models,
    native,
    openai,
    openai_embeddings,
    openai_input_tokens,
    pull,
    status,
    system,
    tokens,
    ws,
)
from llamahomed.http.openapi import (
    BatchResponse,
    ConfigDocument,
    Health,
    ModelList,
    ModelSummary,
    ProcessResponse,
    StreamLine,
)
from llamahomed.http.route import Operation, Route, RouteTable, Scope
from llamahomed.http.schemas import BatchRequest, ProcessRequest

from llamahomed.http.handlers.ollama import blobs as ollama_blobs
from llamahomed.http.handlers.ollama import schemas as ollama_schemas
from llamahomed.http.handlers.ollama import generate as ollama_generate
from llamahomed.http.handlers.ollama import manage as ollama_manage
from llamahomed.http.handlers.ollama import models as ollama_models

REF = openapi.REF
NDJSON = openapi.NDJSON
_GENERATION_ERRORS = (400, 404, 413, 415, 422, 503)
_ANTHROPIC_ERRORS = (400, 401, 403, 404, 413, 429, 500, 529)
_ANY = {"type": "object"}



def _ollama(method: str, path: str, handler: Any, scope: Scope, summary: str,
            request: type[BaseModel] | None = None, errors: tuple[int, ...] = (),
            response_type: str = "application/json") -> Route:
    """One of Ollama's routes: its errors in Ollama's shape ``{"error": "message"}``."""
    return Route(method, path, handler, scope, Operation(
        summary, tag="ollama", request=request, response=_ANY, response_type=response_type,
        errors=errors), errors="ollama")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", system.health, "public",
          Operation("Liveness, version, loaded models", tag="system", response=Health)),
    Route("GET", "/metrics", metrics.metrics, "admin", Operation(
        "Prometheus metrics (vLLM names plus llamahome_*); public when metrics_public is set",
        tag="system", response={"type": "string"}, response_type="text/plain"),
        public_when="metrics_public"),
    Route("GET", "/api/v1/status", status.status, "admin", Operation(
        "Daemon status: loaded models, plans, slots, queue, memory, uptime", tag="system",
        response=_ANY)),
    # LlamaHome's own generation routes (the API guide)
    Route("POST", "/api/v1/process", native.process, "inference", Operation(
        "Generate text for a prompt", tag="generation", request=ProcessRequest,
        response=ProcessResponse, errors=_GENERATION_ERRORS, also_streams=True,
        description="With stream=true the answer is NDJSON as for /api/v1/stream.")),
    Route("POST", "/api/v1/stream", native.stream, "inference", Operation(
        "Stream generated text as NDJSON lines", tag="generation", request=ProcessRequest,
        response=StreamLine, response_type=NDJSON, errors=_GENERATION_ERRORS)),
    Route("POST", "/api/v1/batch", native.batch, "inference", Operation(
        "Generate for several prompts at once", tag="generation", request=BatchRequest,
        response=BatchResponse, errors=_GENERATION_ERRORS)),
    Route("GET", "/api/v1/ws", ws.websocket, "inference", Operation(
        "WebSocket: many generations on one socket (see docs/OpenAI.md)", tag="generation",
        response=_ANY, errors=(400, 403),
        description="Authenticated before the upgrade: a bearer header, or ?ticket= from "
                    "POST /api/v1/ws/ticket."), self_authenticating=True),
    Route("POST", "/api/v1/ws/ticket", ws.ticket, "inference", Operation(
        "A 30-second single-use ticket for a browser's WebSocket", tag="generation",
        response=_ANY)),
    # llama-server's tokenizer routes, on the model's own vocabulary (in its worker)
    Route("POST", "/tokenize", tokens.tokenize, "inference", Operation(
        "Tokenize text with a model's vocabulary (llama-server's shape)", tag="tokens",
        request=tokens.TokenizeRequest, response=tokens.TokenizeResponse,
        errors=_GENERATION_ERRORS)),
    Route("POST", "/detokenize", tokens.detokenize, "inference", Operation(
        "Turn token ids back into text (llama-server's shape)", tag="tokens",
        request=tokens.DetokenizeRequest, response=tokens.DetokenizeResponse,
        errors=_GENERATION_ERRORS)),
    # models and configuration
    Route("GET", "/api/v1/models", models.list_models, "inference",
          Operation("List installed models", tag="models", response=ModelList)),
    Route("GET", "/api/v1/models/{model_id}", models.get_model, "inference", Operation(
        "One model in detail", tag="models", response=ModelSummary, errors=(404,))),
    Route("POST", "/api/v1/models/{model_id}/load", manage.load_model, "admin", Operation(
        "Load a model now (the planner's choice), as its first request would", tag="models",
        response=_ANY, errors=(404, 507))),
    Route("POST", "/api/v1/models/{model_id}/unload", manage.unload_model, "admin", Operation(
        "Unload a model (its running requests end)", tag="models", response=_ANY,
        errors=(404,))),
    Route("DELETE", "/api/v1/models/{model_id}", manage.delete_model, "admin", Operation(
        "Delete a model's files (every variant, or one as id:quant)", tag="models",
        response=_ANY, errors=(404,))),
    Route("POST", "/api/v1/models/import", manage.import_model, "admin", Operation(
        "Add a GGUF file that is on the daemon's machine to the store", tag="models",
        request=manage.ImportRequest, response=_ANY, errors=(400, 409))),
    Route("POST", "/api/v1/models/pull", pull.pull_model, "admin", Operation(
        "Download a model into the store (NDJSON progress unless stream=false)", tag="models",
        request=pull.PullRequest, response=_ANY, response_type=NDJSON,
        errors=(400, 404, 409, 415, 422, 502, 507))),
    Route("GET", "/api/v1/config", system.get_config, "inference",
          Operation("The live configuration", tag="config", response=ConfigDocument)),
    Route("POST", "/api/v1/config", system.update_config, "admin", Operation(
        "Change the configuration (partial, validated, persisted, live)", tag="config",
        request={"$ref": REF.format(model="ConfigPatch")}, response=ConfigDocument,
        errors=(400, 415, 422))),
    Route("GET", "/api/v1/openapi.json", openapi.serve, "inference",
          Operation("This document", tag="system", response=_ANY)),
    # bearer tokens (admin): the same store as `llamahomed token`
    Route("GET", "/api/v1/tokens", access_tokens.list_tokens, "admin", Operation(
        "Tokens issued (ids and claims, never the tokens)", tag="tokens", response=_ANY)),
    Route("POST", "/api/v1/tokens", access_tokens.create_token, "admin", Operation(
        "Create a token (shown in this answer only)", tag="tokens",
        request=access_tokens.TokenRequest, response=_ANY, errors=(400,))),
    Route("DELETE", "/api/v1/tokens/{token_id}", access_tokens.revoke_token, "admin", Operation(
        "Revoke a token", tag="tokens", response=_ANY, errors=(404,))),
    # the web console (static, public) and its login ticket
    Route("GET", "/ui", console.index, "public", Operation(
        "The web console (redirects to /ui/)", tag="console", response_type="text/html")),
    Route("GET", "/ui/", console.index, "public", Operation(
        "The web console", tag="console", response_type="text/html")),
    Route("GET", "/ui/{name}", console.asset, "public", Operation(
        "The console's scripts and styles", tag="console", response_type="text/plain",
        errors=(404,))),
    Route("POST", "/api/v1/console/ticket", console.ticket, "admin", Operation(
        "A 60-second single-use console login ticket (what `llamahomed ui` opens)",
        tag="console", response=_ANY)),
    Route("POST", "/api/v1/console/login", console.login, "public", Operation(
        "Trade a console ticket for a session token", tag="console",
        request=console.LoginRequest, response=_ANY, errors=(400, 401))),
    # OpenAI compatibility: OpenAI's request bodies and OpenAI-shaped errors (docs/OpenAI.md)
    Route("POST", "/v1/chat/completions", openai.chat_completions, "inference", Operation(
        "OpenAI chat completions (SSE with stream=true)", tag="openai", request=openai.ChatRequest,
        response=_ANY, errors=_GENERATION_ERRORS, also_streams=True), errors="openai"),
    Route("POST", "/v1/completions", openai.completions, "inference", Operation(
        "OpenAI completions (SSE with stream=true)", tag="openai",
        request=openai.CompletionRequest, response=_ANY, errors=_GENERATION_ERRORS,
        also_streams=True), errors="openai"),
    Route("GET", "/v1/models", openai.list_models, "inference",
          Operation("OpenAI model list", tag="openai", response=_ANY), errors="openai"),
    Route("GET", "/v1/models/{model_id}", openai.get_model, "inference",
          Operation("One OpenAI model object", tag="openai", response=_ANY, errors=(404,)),
          errors="openai"),
    Route("POST", "/v1/embeddings", openai_embeddings.embeddings, "inference", Operation(
        "OpenAI embeddings from any model (its own pooling, else mean), L2-normalised",
        tag="openai", request=openai_embeddings.EmbeddingRequest, response=_ANY,
        errors=_GENERATION_ERRORS), errors="openai"),
    Route("POST", "/v1/responses/input_tokens", openai_input_tokens.input_tokens, "inference",
          Operation("OpenAI's input-token count for a Responses input, through the model's chat "
                    "template", tag="openai", request=openai_input_tokens.InputTokensRequest,
                    response=_ANY, errors=_GENERATION_ERRORS), errors="openai"),
    # Ollama's API: Ollama's bodies and Ollama-shaped errors (docs/Ollama.md)
    *(Route(method, "/", ollama_models.root, "public", Operation(
        "Ollama's liveness probe (\"Ollama is running\")", tag="ollama",
        response={"type": "string"}, response_type="text/plain"), errors="ollama")
      for method in ("GET", "HEAD")),
    _ollama("GET", "/api/version", ollama_models.version, "public", "Ollama API version"),
    _ollama("GET", "/api/tags", ollama_models.tags, "inference", "Ollama: installed models"),
    _ollama("POST", "/api/show", ollama_models.show, "inference", "Ollama: one model in detail",
            ollama_schemas.ModelRequest, (400, 404)),
    _ollama("GET", "/api/ps", ollama_models.ps, "inference", "Ollama: loaded models"),
    _ollama("POST", "/api/generate", ollama_generate.generate, "inference",
            "Ollama: generate (NDJSON unless stream=false)", ollama_schemas.GenerateRequest,
            _GENERATION_ERRORS, NDJSON),
    _ollama("POST", "/api/chat", ollama_generate.chat, "inference",
            "Ollama: chat (NDJSON unless stream=false)", ollama_schemas.ChatRequest,
            _GENERATION_ERRORS, NDJSON),
    _ollama("POST", "/api/embed", ollama_generate.embed, "inference", "Ollama: embeddings",
            ollama_schemas.EmbedRequest, _GENERATION_ERRORS),
    _ollama("POST", "/api/embeddings", ollama_generate.embeddings, "inference",
            "Ollama: one embedding (the older route)", ollama_schemas.EmbeddingsRequest,
            _GENERATION_ERRORS),
    _ollama("POST", "/api/pull", ollama_manage.pull, "admin",
            "Ollama: download a catalog model or a URL (progress as NDJSON)",
            ollama_schemas.PullRequest, (400, 404, 409, 502, 507), NDJSON),
    _ollama("DELETE", "/api/delete", ollama_manage.delete, "admin", "Ollama: delete a model",
            ollama_schemas.ModelRequest, (400, 404)),
    _ollama("POST", "/api/copy", ollama_manage.copy, "admin",
            "Ollama: a second name for a model", ollama_schemas.CopyRequest, (400, 404, 409)),
    _ollama("POST", "/api/create", ollama_manage.create, "admin",
            "Ollama: a model from one in the store or an uploaded GGUF",
            ollama_schemas.CreateRequest, (400, 404, 409)),
    _ollama("HEAD", "/api/blobs/{digest}", ollama_blobs.head_blob, "admin",
            "Ollama: whether a blob was uploaded", errors=(400, 404)),
    _ollama("POST", "/api/blobs/{digest}", ollama_blobs.upload_blob, "admin",
            "Ollama: upload a GGUF (sha256-checked) for /api/create", errors=(400, 507)),
    # Anthropic's Messages API: Anthropic's request bodies, SSE and error shape (docs/Anthropic.md)
    Route("POST", "/v1/messages", anthropic.messages, "inference", Operation(
        "Anthropic Messages API (Anthropic's SSE events with stream=true)", tag="anthropic",
        request=anthropic_schema.MessagesRequest, response=_ANY, errors=_ANTHROPIC_ERRORS),
        errors="anthropic"),
    Route("POST", "/v1/messages/count_tokens", anthropic.count_tokens, "inference", Operation(
        "Anthropic token counting: the prompt tokens of a Messages request", tag="anthropic",
        request=anthropic_schema.CountTokensRequest, response=_ANY, errors=_ANTHROPIC_ERRORS),
        errors="anthropic"),
)


def route_table() -> RouteTable:
    """A fresh table of the daemon's routes (each app gets its own: tests may add to it)."""
    return RouteTable(ROUTES)
