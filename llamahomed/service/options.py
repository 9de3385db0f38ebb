"""What a generation request may ask of the sampler, validated once for every dialect.

Each dialect's request body maps its own field names onto :class:`GenerationOptions` (the native
API subclasses it); :meth:`GenerationOptions.sampling` fills what was left out from the live
config and enforces the server's limits, giving the engine's ``SamplingParams``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llamahomed.core.errors import ValidationFailed
from llamahomed.core.settings import ModelSettings, SystemSettings
from llamahomed.engine.protocol import SamplingParams

MAX_STOP_STRINGS = 8
DEFAULT_MIN_P = 0.05


class GenerationOptions(BaseModel):
    """The fields every generation request shares (the guide's plus sampling controls)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
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

    @field_validator("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                     "seed", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        """JSON's true/false is not a number (pydantic's lax mode would read it as 1/0)."""
        if isinstance(value, bool):
            raise ValueError("a number, not a boolean")
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
            min_p=DEFAULT_MIN_P if self.min_p is None else self.min_p,
            repeat_penalty=defaults.repeat_penalty if self.repeat_penalty is None else self.repeat_penalty,
            seed=self.seed, stop=tuple(stops))


class NativeOptions(GenerationOptions):
    """The native API's prompt handling: a prompt is rendered through the model's chat template
    (one user message, after ``system`` when given) unless ``raw``."""

    raw: bool = Field(False, description="Send the prompt verbatim, without the chat template.")
    system: str | None = Field(None, min_length=1, max_length=1_000_000,
                               description="A system message before the prompt (not with raw).")

    @model_validator(mode="after")
    def _system_not_raw(self) -> NativeOptions:
        if self.raw and self.system is not None:
            raise ValueError("raw sends the prompt verbatim: it takes no system text")
        return self


class PromptOptions(NativeOptions):
    """A generation from one prompt (the native API, the WebSocket, the in-process engine)."""

    prompt: str = Field(..., min_length=1, max_length=4_000_000)


def validation_details(exc: ValidationError) -> dict[str, Any]:
    """Pydantic's errors as the envelope's ``details``: ``{"errors": [{field, message}]}``."""
    return {"errors": [{"field": ".".join(str(p) for p in err["loc"]) or "body",
                        "message": err["msg"]} for err in exc.errors()]}
