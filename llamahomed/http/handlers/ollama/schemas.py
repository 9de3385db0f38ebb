"""Ollama's request bodies, and how their fields map onto :class:`GenerationOptions`.

Fields LlamaHome cannot honour are refused with a 400 that names them (``images``,
``template``, ``context``, ``suffix`` without fill-in-the-middle); ``think`` is
accepted and ignored (no thinking model yet). Ollama's ``options`` map like this:

    num_predict -> max_tokens (-1, -2: the server's default)   num_ctx -> the context to load with
    temperature, top_k, top_p, min_p, seed, stop, repeat_penalty, presence_penalty,
    frequency_penalty -> the same sampling fields

    num_thread, num_gpu (layers), num_batch -> constraints for the planner (LoadOptions): a
    loaded model that differs reloads for an admin token, and refuses other tokens (403)

Other options Ollama knows (``mirostat``, ``tfs_z``, ...) are accepted and not applied; unknown
ones are ignored, as Ollama ignores them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llamahomed.core.errors import InvalidRequest, ValidationFailed
from llamahomed.service.load_options import LoadOptions
from llamahomed.service.options import GenerationOptions, validation_details

FOREVER = -1.0
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty",
             "frequency_penalty")


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's ``keep_alive``: seconds, or a Go duration (``"5m"``, ``"1h30m"``, ``"-1"``);
    negative means forever (-1.0 here). None: not given."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid("keep_alive", "a duration such as \"5m\" or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise _invalid("keep_alive", f"{value[:40]!r} is not a duration such as \"5m\", "
                                             "\"1h30m\" or \"300\"") from None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    if math.isnan(seconds):
        raise _invalid("keep_alive", "not a number")
    return FOREVER if seconds < 0 else seconds


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}",
                          details={"errors": [{"field": field, "message": message}]})


class Options(BaseModel):
    """Ollama's ``options``; unknown keys are ignored, as Ollama ignores them."""

    model_config = ConfigDict(extra="ignore")

    num_ctx: int | None = Field(None, ge=64, le=1_048_576)
    num_predict: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # load-time options: constraints for the planner (0 or negative: the planner decides)
    num_gpu: int | None = Field(None, le=100_000)
    num_thread: int | None = Field(None, le=1024)
    num_batch: int | None = Field(None, le=65_536)
    # LlamaHome extension (Ollama has none): force tool calls on /api/chat (handlers/ollama/tools)
    tool_choice: str | dict[str, Any] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    thinking: str | None = None
    tool_name: str | None = None

    def for_template(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_name:
            message["name"] = self.tool_name
        return message


class GenerationBody(BaseModel):
    """What /api/generate and /api/chat share."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field("", max_length=300)
    options: Options | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: float | str | None = None
    stream: bool = True
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        return None if value == "" else value

    def refused(self) -> list[tuple[str, str]]:
        """Fields asked for that this daemon cannot honour: (field, why)."""
        problems: list[tuple[str, str]] = []
        return problems

    def check(self) -> None:
        problems = self.refused()
        if problems:
            field, why = problems[0]
            raise InvalidRequest(f"{field}: {why}", details={"errors": [
                {"field": f, "message": m} for f, m in problems]})

    @property
    def keep_alive_s(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    @property
    def n_ctx(self) -> int | None:
        return self.options.num_ctx if self.options else None

    @property
    def load_options(self) -> LoadOptions:
        """``num_thread``, ``num_gpu`` (layers; negative: the planner's), ``num_batch``."""
        opts = self.options or Options()
        return LoadOptions(
            n_threads=opts.num_thread if opts.num_thread and opts.num_thread > 0 else None,
            n_gpu_layers=opts.num_gpu if opts.num_gpu is not None and opts.num_gpu >= 0 else None,
            n_batch=opts.num_batch if opts.num_batch and opts.num_batch > 0 else None)

    def generation_options(self, model: str) -> GenerationOptions:
        """The sampling fields, validated by the same rules as every other dialect."""
        opts = self.options or Options()
        fields: dict[str, Any] = {name: getattr(opts, name) for name in _SAMPLING}
        predict = opts.num_predict
        fields.update(model=model, stop=opts.stop, format=self.format,
                      logprobs=bool(self.logprobs), top_logprobs=self.top_logprobs,
                      max_tokens=predict if predict is not None and predict > 0 else None,
                      seed=opts.seed if opts.seed is not None and opts.seed >= 0 else None)
        try:
            return GenerationOptions.model_validate(fields)
        except ValidationError as exc:
            details = validation_details(exc)
            for error in details["errors"]:  # Ollama's names for the fields
                name = error["field"].split(".")[0]
                error["field"] = ("format" if name == "format" else "options.num_predict"
                                  if name == "max_tokens" else f"options.{name}")
            names = ", ".join(e["field"] for e in details["errors"])
            first = details["errors"][0]["message"]
            raise ValidationFailed(f"invalid {names}: {first}", details=details) from exc


class GenerateRequest(GenerationBody):
    prompt: str | None = Field(None, max_length=4_000_000)
    suffix: str | None = None
    system: str | None = Field(None, max_length=1_000_000)
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[Any] | None = None

    def refused(self) -> list[tuple[str, str]]:
        problems = super().refused()
        if self.images:
            problems.append(("images", "no vision model is served yet"))
        if self.template:
            problems.append(("template", "the model's own chat template (from its GGUF) is used"))
        if self.context:
            problems.append(("context", "not supported; send the conversation to /api/chat"))
        return problems


class ChatRequest(GenerationBody):
    messages: list[Message] = Field(default_factory=list, max_length=10_000)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    """LlamaHome extension (also read from ``options.tool_choice``): see handlers/ollama/tools."""

    @property
    def choice(self) -> str | dict[str, Any] | None:
        if self.tool_choice is not None:
            return self.tool_choice
        return self.options.tool_choice if self.options else None

    def refused(self) -> list[tuple[str, str]]:
        problems = super().refused()
        if any(m.images for m in self.messages):
            problems.append(("messages.images", "no vision model is served yet"))
        return problems


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field("", max_length=300)
    input: str | list[str] = ""
    truncate: bool = True
    options: Options | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class EmbeddingsRequest(BaseModel):
    """The older /api/embeddings: one ``prompt``, one ``embedding``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field("", max_length=300)
    prompt: str = ""
    options: Options | None = None
    keep_alive: float | str | None = None


class ModelRequest(BaseModel):
    """/api/show and /api/delete: a model name (``name`` is the older spelling)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field("", max_length=300)
    name: str = Field("", max_length=300)
    verbose: bool = False

    @property
    def which(self) -> str:
        return self.model or self.name


class CopyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: str = Field(..., min_length=1, max_length=300)
    destination: str = Field(..., min_length=1, max_length=300)


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field("", max_length=2000)
    name: str = Field("", max_length=2000)
    insecure: bool = False
    stream: bool = True

    @property
    def which(self) -> str:
        return self.model or self.name


class CreateRequest(BaseModel):
    """/api/create: a new name for a model in the store (``from``), or a GGUF uploaded as a
    blob (``files``: ``{"name.gguf": "sha256:<digest>"}``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)

    model: str = Field("", max_length=300)
    name: str = Field("", max_length=300)
    from_: str | None = Field(None, alias="from", max_length=300)
    files: dict[str, str] | None = None
    stream: bool = True
    quantize: str | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    license: str | list[str] | None = None
    modelfile: str | None = None

    @property
    def which(self) -> str:
        return self.model or self.name

    def refused(self) -> list[tuple[str, str]]:
        problems = [(field, "not supported: a model here is its GGUF file as it is")
                    for field in ("quantize", "adapters", "template", "system", "parameters",
                                  "messages", "license", "modelfile")
                    if getattr(self, field)]
        if self.from_ and self.files:
            problems.append(("files", "give from (a model) or files (an uploaded GGUF), not both"))
        if not self.from_ and not self.files:
            problems.append(("from", "give from (a model) or files (an uploaded GGUF)"))
        if self.files and len(self.files) != 1:
            problems.append(("files", "exactly one GGUF file"))
        return problems
