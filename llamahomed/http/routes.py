"""Every route the daemon serves: method, path, handler, scope, OpenAPI operation.

This table is the one place a route is declared. ``create_app`` installs it on the router, the
auth middleware reads each route's scope from it, and the OpenAPI document is built from it.
A new dialect adds its handler module and its rows here.
"""

from __future__ import annotations

from llamahomed.http import openapi
from llamahomed.http.handlers import (
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
from llamahomed.http.route import Operation, Route, RouteTable
from llamahomed.http.schemas import BatchRequest, ProcessRequest

REF = openapi.REF
NDJSON = openapi.NDJSON
_GENERATION_ERRORS = (400, 404, 413, 415, 422, 503)
_ANY = {"type": "object"}

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
    # OpenAI compatibility: OpenAI's request bodies and OpenAI-shaped errors (docs/OpenAI.md)
    Route("POST", "/v1/chat/completions", openai.chat_completions, "inference", Operation(
        "OpenAI chat completions (SSE with stream=true)", tag="openai", request=openai.ChatRequest,
        response=_ANY, errors=_GENERATION_ERRORS, also_streams=True)),
    Route("POST", "/v1/completions", openai.completions, "inference", Operation(
        "OpenAI completions (SSE with stream=true)", tag="openai",
        request=openai.CompletionRequest, response=_ANY, errors=_GENERATION_ERRORS,
        also_streams=True)),
    Route("GET", "/v1/models", openai.list_models, "inference",
          Operation("OpenAI model list", tag="openai", response=_ANY)),
    Route("GET", "/v1/models/{model_id}", openai.get_model, "inference",
          Operation("One OpenAI model object", tag="openai", response=_ANY, errors=(404,))),
    Route("POST", "/v1/embeddings", openai_embeddings.embeddings, "inference", Operation(
        "OpenAI embeddings from any model (its own pooling, else mean), L2-normalised",
        tag="openai", request=openai_embeddings.EmbeddingRequest, response=_ANY,
        errors=_GENERATION_ERRORS)),
    Route("POST", "/v1/responses/input_tokens", openai_input_tokens.input_tokens, "inference",
          Operation("OpenAI's input-token count for a Responses input, through the model's chat "
                    "template", tag="openai", request=openai_input_tokens.InputTokensRequest,
                    response=_ANY, errors=_GENERATION_ERRORS)),
)


def route_table() -> RouteTable:
    """A fresh table of the daemon's routes (each app gets its own: tests may add to it)."""
    return RouteTable(ROUTES)
