"""Request bodies: parsed strictly, with field paths in every validation error."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from llamahomed.core.errors import (
    InvalidRequest,
    UnsupportedMediaType,
    ValidationFailed,
)
from llamahomed.service.options import NativeOptions, PromptOptions, validation_details

Body = TypeVar("Body", bound=BaseModel)

MAX_BATCH_PROMPTS = 64


class ProcessRequest(PromptOptions):
    stream: bool = False


class BatchRequest(NativeOptions):
    prompts: list[str] = Field(..., min_length=1, max_length=MAX_BATCH_PROMPTS)

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not p for p in value):
            raise ValueError("prompts must not be empty strings")
        return value


MAX_JSON_DEPTH = 64
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def loads(raw: bytes | str, what: str = "the body") -> Any:
    """JSON from a client: a clear 400 for bad JSON, nesting deeper than ``MAX_JSON_DEPTH``
    (instead of a RecursionError) and lone surrogates (text that is not Unicode)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from exc
    suspect = _SURROGATE.search(raw) if isinstance(raw, str) else _SURROGATE_ESCAPE.search(raw)
    _check(value, MAX_JSON_DEPTH, what, suspect is not None)
    return value


def _check(value: Any, depth: int, what: str, surrogates: bool) -> None:
    if isinstance(value, (dict, list)):
        if depth <= 0:
            raise InvalidRequest(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if surrogates and isinstance(key, str):
                _check(key, depth, what, surrogates)
            _check(item, depth - 1, what, surrogates)
    elif surrogates and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"{what} holds a lone surrogate (\\ud800-\\udfff): "
                                 "not a Unicode string") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a clear 4xx in the envelope."""
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.content_type}")
    data = loads(await request.read() or b"null")
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
