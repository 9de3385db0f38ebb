"""What a generation request may ask of the sampler, validated once for every dialect.

Each dialect's request body maps its own field names onto :class:`GenerationOptions` (the native
API subclasses it); :meth:`GenerationOptions.sampling` fills what was left out from the live
config and enforces the server's limits, giving the engine's ``SamplingParams``.

Constrained output: ``format`` (``"json"``: any JSON object; a JSON Schema object: JSON that
validates against it) or ``grammar`` (GBNF, root rule ``root``), not both. Schemas are converted
to GBNF and every grammar is parse-checked here, when the body is validated, so a bad one is
refused with the request's other field errors before a model is loaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llamahomed.core.duration import parse_duration
from llamahomed.core.errors import ValidationFailed
from llamahomed.core.settings import ModelSettings, SystemSettings
from llamahomed.engine.grammar import GrammarError, grammar_problem, json_grammar, schema_grammar
from llamahomed.engine.protocol import SamplingParams

MAX_STOP_STRINGS = 8
DEFAULT_MIN_P = 0.05
MAX_LOGIT_BIAS = 1024
MAX_GRAMMAR_CHARS = 256_000
MAX_TOP_LOGPROBS = 20


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
    seed: int | None = Field(None, ge=0, le=2**32 - 2)  # 2**32 - 1 is llama.cpp's "random"
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    format: str | dict[str, Any] | None = None
    grammar: str | None = Field(None, min_length=1, max_length=MAX_GRAMMAR_CHARS)
    logprobs: bool = Field(False, description="Each generated token's log probability.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="With logprobs: this many most likely "
                                                 "alternatives per token (0 to 20).")

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries")
        for key, bias in value.items():
            if not key.isascii() or not key.isdigit() or int(key) >= 2**31:
                raise ValueError(f"keys are token ids (non-negative integers as strings), not {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for token {key} is {bias}; it must be -100 to 100")
        return value

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, dict):
            _checked(schema_grammar(value))
        elif value is not None and value != "json":
            raise ValueError(f'"json" or a JSON Schema object, not {value!r}')
        return value

    @field_validator("grammar")
    @classmethod
    def _check_grammar(cls, value: str | None) -> str | None:
        if value is not None:
            _checked(value)
        return value

    @model_validator(mode="after")
    def _one_constraint(self) -> GenerationOptions:
        if self.format is not None and self.grammar is not None:
            raise ValueError("give format (JSON) or grammar (GBNF), not both")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def gbnf(self) -> str:
        """The GBNF grammar the output must follow; "" for none."""
        if self.grammar is not None:
            return self.grammar
        if self.format == "json":
            return json_grammar()
        if isinstance(self.format, dict):
            return schema_grammar(self.format)
        return ""

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
            seed=self.seed, stop=tuple(stops),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items()),
            grammar=self.gbnf(), logprobs=self.logprobs, top_logprobs=self.top_logprobs or 0)


def _checked(grammar: str) -> str:
    """``grammar`` if llama.cpp's parser takes it; else ValueError naming the problem."""
    problem = grammar_problem(grammar)
    if problem:
        raise GrammarError(problem)
    return grammar


class NativeOptions(GenerationOptions):
    """The native API's prompt handling: a prompt is rendered through the model's chat template
    (one user message, after ``system`` when given) unless ``raw``."""

    raw: bool = Field(False, description="Send the prompt verbatim, without the chat template.")
    system: str | None = Field(None, min_length=1, max_length=1_000_000,
                               description="A system message before the prompt (not with raw).")
    keep_alive: float | None = Field(
        None, json_schema_extra={"anyOf": [{"type": "number"}, {"type": "string"},
                                           {"type": "null"}]},
        description="How long the model stays loaded once idle after this request: "
        "seconds or a duration such as '5m' or '1h30m'; 0 unloads it when idle, a negative "
        "value keeps it until it is evicted (default: system_settings.keep_alive).")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _system_not_raw(self) -> NativeOptions:
        if self.raw and self.system is not None:
            raise ValueError("raw sends the prompt verbatim: it takes no system text")
        return self


class ChatTurn(BaseModel):
    """One message of a conversation given to the native API instead of a prompt."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=4_000_000)


class PromptOptions(NativeOptions):
    """A generation from one prompt or one conversation (the native API, the WebSocket, the
    in-process engine)."""

    prompt: str | None = Field(None, min_length=1, max_length=4_000_000,
                               description="The prompt (or give messages).")
    messages: list[ChatTurn] | None = Field(
        None, min_length=1, max_length=10_000,
        description="A conversation instead of a prompt, rendered through the model's chat "
                    "template (after system, when given); for models that can chat.")

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> PromptOptions:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give a prompt or messages (one of the two)")
        if self.messages is not None and self.raw:
            raise ValueError("raw sends a prompt verbatim; messages go through the chat template")
        return self

    def turns(self) -> list[dict[str, Any]] | None:
        """The conversation for the chat template (system first), or None for a prompt."""
        if self.messages is None:
            return None
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + [turn.model_dump() for turn in self.messages]


def validation_details(exc: ValidationError) -> dict[str, Any]:
    """Pydantic's errors as the envelope's ``details``: ``{"errors": [{field, message}]}``."""
    return {"errors": [{"field": ".".join(str(p) for p in err["loc"]) or "body",
                        "message": err["msg"]} for err in exc.errors()]}
