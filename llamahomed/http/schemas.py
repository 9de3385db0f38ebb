"""Request bodies: parsed strictly, with field paths in every validation error."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llamahomed.engine.protocol import SamplingParams
from llamahomed.core.errors import InvalidRequest, UnsupportedMediaType, ValidationFailed
from llamahomed.core.settings import ModelSettings, SystemSettings

Body = TypeVar("Body", bound=BaseModel)

MAX_STOP_STRINGS = 8
MAX_BATCH_PROMPTS = 64


class GenerationFields(BaseModel):
    """The fields every generation request shares (the guide's plus sampling controls)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0, le=10.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not s or len(s) > 200 for s in stops):
            raise ValueError("stop strings must be 1 to 200 characters")
        return value

    def sampling(self, defaults: ModelSettings, limits: SystemSettings) -> SamplingParams:
        """Fill what the request left out from the live config; enforce the max_tokens cap."""
        max_tokens = self.max_tokens or defaults.max_tokens
        if max_tokens > limits.max_tokens_limit:
            raise ValidationFailed(
                f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens_limit}",
                details={"errors": [{"field": "max_tokens",
                                     "message": f"must be <= {limits.max_tokens_limit}"}]})
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            min_p=0.05 if self.min_p is None else self.min_p,
            repeat_penalty=defaults.repeat_penalty if self.repeat_penalty is None else self.repeat_penalty,
            seed=self.seed, stop=tuple(stops))


class ProcessRequest(GenerationFields):
    prompt: str = Field(..., min_length=1, max_length=4_000_000)
    stream: bool = False


class BatchRequest(GenerationFields):
    prompts: list[str] = Field(..., min_length=1, max_length=MAX_BATCH_PROMPTS)

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not p for p in value):
            raise ValueError("prompts must not be empty strings")
        return value


def validation_details(exc: ValidationError) -> dict[str, Any]:
    return {"errors": [{"field": ".".join(str(p) for p in err["loc"]) or "body",
                        "message": err["msg"]} for err in exc.errors()]}


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
