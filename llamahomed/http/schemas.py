"""Request bodies: parsed strictly, with field paths in every validation error."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from llamahomed.core.errors import (
    InvalidRequest,
    UnsupportedMediaType,
    ValidationFailed,
)
from llamahomed.service.options import GenerationOptions, PromptOptions, validation_details

Body = TypeVar("Body", bound=BaseModel)

MAX_BATCH_PROMPTS = 64


class ProcessRequest(PromptOptions):
    stream: bool = False


class BatchRequest(GenerationOptions):
    prompts: list[str] = Field(..., min_length=1, max_length=MAX_BATCH_PROMPTS)

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not p for p in value):
            raise ValueError("prompts must not be empty strings")
        return value


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a clear 4xx in the envelope."""
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.content_type}")
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data


async def parse_body(request: web.Request, model: type[Body]) -> Body:
    """The JSON body validated as ``model`` (422 with field paths when it is not)."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
        fields = ", ".join(e["field"] for e in details["errors"])
        raise ValidationFailed(f"invalid request field(s): {fields}", details=details) from exc
