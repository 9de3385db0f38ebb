"""GET /api/v1/openapi.json: an OpenAPI 3.1 description built from the app's route table.

:func:`build_spec` walks ``app.router`` and describes each (method, path) with its
:class:`~llamahomed.http.route.Route` in the app's table: the operation, and the scope (a public
route has no security, an admin one answers 403). Request bodies are the pydantic models the
handlers validate with, responses the models below, and every error the one envelope
(``ErrorEnvelope``). A route registered outside the table still appears, marked
``x-undocumented`` with a generic body, and ``tests/http/test_openapi.py`` fails until it is in
the table. To add a route, add one ``Route`` to ``http/routes.py``.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from llamahomed import __version__
from llamahomed.core.config_store import SECTIONS
from llamahomed.http.keys import ROUTES
from llamahomed.http.route import JSON, Operation, Route

NDJSON = "application/x-ndjson"
REF = "#/components/schemas/{model}"


# ---- response bodies (what the handlers return; schemathesis checks real responses against them)

class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. rate_limit_exceeded.")
    message: str = Field(description="What went wrong, for a person.")
    details: dict[str, Any] = Field(description="Code-specific details, e.g. retry_after.")


class ErrorEnvelope(BaseModel):
    """Every error response: ``{"error": {"code", "message", "details"}}``."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorBody


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ProcessResponse(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    text: str
    usage: Usage
    finish_reason: str
    model: str
    created: str = Field(description="UTC time, e.g. 2024-03-15T12:00:00Z.")


class StreamLine(BaseModel):
    """One NDJSON line: a chunk, the final ``done`` line with usage, or an error envelope."""

    model_config = ConfigDict(extra="allow")
    chunk: str | None = None
    index: int | None = None
    done: bool | None = None
    usage: Usage | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    results: list[ProcessResponse | ErrorEnvelope] = Field(
        description="One per prompt, in order: a result or that prompt's error.")


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    version: str | None
    parameters: str | None
    context_length: int | None
    quantization: str
    size: int
    capabilities: list[str]
    loaded: bool


class ModelList(BaseModel):
    models: list[ModelSummary]


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float
    models_loaded: list[str] | None = Field(
        None, description="Loaded models; only for a caller with a valid token.")


class ConfigDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_settings: dict[str, Any]
    system_settings: dict[str, Any]


# ---- operations

_REASONS = {400: "Invalid request", 401: "Missing or invalid token", 403: "Token lacks the scope",
            404: "Not found", 405: "Method not allowed", 413: "Body too large",
            415: "Not JSON", 422: "A field failed validation",
            429: "Over the token's rate limit (see Retry-After)",
            500: "Internal error", 503: "Busy: the model's queue is full (see Retry-After)"}


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


_LIMIT_HEADERS = {
    "x-request-id": _header("The request's id (the client's, when it sent a sane one)."),
    "RateLimit-Policy": _header('IETF draft: "<tier>";q=<burst>;w=<seconds to refill>.'),
    "RateLimit": _header('IETF draft: "<tier>";r=<remaining>;t=<seconds until full>.'),
    "x-ratelimit-limit-requests": _header("Requests the token's bucket holds (the burst).", "integer"),
    "x-ratelimit-remaining-requests": _header("Requests left now.", "integer"),
    "x-ratelimit-reset-requests": _header("Time until the bucket is full, e.g. 1.5s."),
}
_RETRY_HEADERS = {
    "Retry-After": _header("Whole seconds until a retry can succeed.", "integer"),
    "retry-after-ms": _header("The same in milliseconds.", "integer"),
}


def _schema_of(thing: type[BaseModel] | dict[str, Any] | None, refs: dict[Any, Any],
               mode: str) -> dict[str, Any]:
    if thing is None:
        return {}
    if isinstance(thing, dict):
        return thing
    return dict(refs[(thing, mode)])


def _config_patch(defs: dict[str, Any]) -> dict[str, Any]:
    """The POST /api/v1/config body: every section optional, every field in it optional."""
    properties = {}
    for name, model in SECTIONS.items():
        schema = model.model_json_schema(ref_template=REF)
        for def_name, sub in schema.pop("$defs", {}).items():
            defs.setdefault(def_name, sub)
        schema.pop("required", None)
        properties[name] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


_DIALECT_ERRORS: dict[str, dict[str, Any]] = {
    "ollama": {"type": "object", "required": ["error"],
               "properties": {"error": {"type": "string"}}},
}
"""Error bodies of the routes whose table entry names a dialect (``Route.errors``)."""


def _operation(method: str, path: str, op: Operation, public: bool, admin: bool,
               refs: dict[Any, Any], dialect: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {
        "description": "OK",
        "headers": {} if public else dict(_LIMIT_HEADERS),
        "content": {op.response_type: {"schema": _schema_of(op.response, refs, "serialization")
                                       or {"type": "object"}}}}}
    if op.also_streams:
        responses["200"]["content"][NDJSON] = {"schema": {"$ref": REF.format(model="StreamLine")}}
    error_ref = _DIALECT_ERRORS.get(dialect or "", {"$ref": REF.format(model="ErrorEnvelope")})
    statuses = set(op.errors) | {405, 500}
    if not public:
        statuses |= {401, 429}
    if admin:
        statuses.add(403)
    for status in sorted(statuses):
        headers = {"x-request-id": _LIMIT_HEADERS["x-request-id"]}
        if status in (429, 503):
            headers.update(_RETRY_HEADERS)
        responses[str(status)] = {"description": _REASONS.get(status, "Error"),
                                  "headers": headers, "content": {JSON: {"schema": error_ref}}}
    responses["default"] = {"description": "Any other error, in the same envelope",
                            "content": {JSON: {"schema": error_ref}}}
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    result: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}", "summary": op.summary,
                              "tags": [op.tag], "responses": responses}
    if op.description:
        result["description"] = op.description
    if public:
        result["security"] = []
    if op.request is not None:
        result["requestBody"] = {"required": True, "content": {
            JSON: {"schema": _schema_of(op.request, refs, "validation")}}}
    params = [{"name": part[1:-1], "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
              for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    if params:
        result["parameters"] = params
    return result


def _undocumented(path: str) -> Operation:
    return Operation(f"(undocumented route {path})", tag="undocumented",
                     request=None, response={"type": "object"})


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD, added by aiohttp for GET, left out)."""
    found: list[tuple[str, str]] = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        found.append((route.method, resource.canonical))
    return found


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes."""
    table = app[ROUTES]
    described: dict[tuple[str, str], tuple[Operation, bool, bool]] = {}
    dialects: dict[tuple[str, str], str | None] = {}
    for method, path in routes(app):
        route: Route | None = table.find(method, path)
        described[(method, path)] = (
            (route.operation, route.scope == "public",
             route.scope == "admin") if route is not None else (_undocumented(path), False, True))
        dialects[(method, path)] = route.errors if route is not None else None
    models: set[tuple[type[BaseModel], str]] = {(ErrorEnvelope, "serialization"),
                                                 (StreamLine, "serialization")}
    for op, _, _ in described.values():
        if isinstance(op.request, type):
            models.add((op.request, "validation"))
        if isinstance(op.response, type):
            models.add((op.response, "serialization"))
    ordered = sorted(models, key=lambda m: (m[0].__name__, m[1]))
    refs, top = models_json_schema(ordered, ref_template=REF)  # type: ignore[arg-type]
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    defs["ConfigPatch"] = _config_patch(defs)
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), (op, public, admin) in described.items():
        entry = _operation(method, path, op, public, admin, refs, dialects[(method, path)])
        if op.tag == "undocumented":
            entry["x-undocumented"] = True
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "LlamaHome", "version": __version__,
                 "description": "The local LLM daemon's API (see the API guide)."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "A token from `llamahomed token create` or the admin token file."}},
        },
    }


async def serve(request: web.Request) -> web.Response:
    """The document of the serving app's routes (built per request: a few milliseconds)."""
    return web.json_response(build_spec(request.app))
