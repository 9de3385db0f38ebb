"""Typed results returned by the LlamaHome client.

Each type is a frozen dataclass with a ``from_dict`` constructor that reads the
daemon's JSON, tolerates keys it does not know, and keeps the whole object in
``raw`` where there is more to see. ``raw`` is a property, not a field, so
``dataclasses.asdict`` (and frameworks that serialize dataclasses, such as
FastAPI) give the documented fields only. ``from_dict`` raises ``ValueError``
when a required field is missing or has the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

_R = TypeVar("_R", bound="_Raw")

__all__ = ["ModelInfo", "ProcessResponse", "StreamChunk", "Usage"]


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an integer, got {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{key!r} must be a string, got {value!r}")
    return str(value)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    return _str(data, key) if data.get(key) is not None else None


class _Raw:
    """Gives a frozen dataclass a ``raw`` property that is not one of its fields."""

    @property
    def raw(self) -> dict[str, Any]:
        """The whole JSON object this was read from (empty when built by hand)."""
        raw: dict[str, Any] = self.__dict__.get("_raw", {})
        return raw

    def _with_raw(self: _R, data: Mapping[str, Any]) -> _R:
        object.__setattr__(self, "_raw", dict(data))
        return self


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> Usage:
        data = _mapping(data, "usage")
        prompt = _int(data, "prompt_tokens")
        completion = _int(data, "completion_tokens")
        total = _int(data, "total_tokens", prompt + completion)
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


@dataclass(frozen=True)
class ProcessResponse(_Raw):
    """The result of one completed generation (``/api/v1/process`` or a batch item)."""

    text: str
    usage: Usage
    model: str
    created: str
    finish_reason: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ProcessResponse:
        data = _mapping(data, "response")
        text = data.get("text")
        if not isinstance(text, str):
            raise ValueError(f"'text' must be a string, got {text!r}")
        usage = data.get("usage")
        response = cls(
            text=text,
            usage=Usage.from_dict(usage) if usage is not None else Usage(),
            model=_str(data, "model"),
            created=_str(data, "created"),
            finish_reason=_opt_str(data, "finish_reason"),
        )
        return response._with_raw(data)


@dataclass(frozen=True)
class StreamChunk:
    """One piece of streamed text; ``index`` counts the chunks yielded so far."""

    text: str
    index: int


@dataclass(frozen=True)
class ModelInfo(_Raw):
    """A model the daemon can serve (``/api/v1/models``)."""

    id: str
    name: str
    version: str = ""
    parameters: str = ""
    context_length: int = 0
    quantization: str | None = None
    size: int | None = None
    """Size on disk in bytes, when the daemon reports it."""
    capabilities: tuple[str, ...] = ()
    performance: dict[str, Any] | None = field(default=None, hash=False)
    loaded: bool | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        data = _mapping(data, "model")
        model_id = data.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"'id' must be a non-empty string, got {model_id!r}")
        size = data.get("size")
        capabilities = data.get("capabilities") or ()
        if not isinstance(capabilities, (list, tuple)):
            raise ValueError(f"'capabilities' must be a list, got {capabilities!r}")
        performance = data.get("performance")
        loaded = data.get("loaded")
        info = cls(
            id=model_id,
            name=_str(data, "name", model_id) or model_id,
            version=_str(data, "version"),
            parameters=_str(data, "parameters"),
            context_length=_int(data, "context_length"),
            quantization=_opt_str(data, "quantization"),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            capabilities=tuple(str(c) for c in capabilities),
            performance=dict(performance) if isinstance(performance, Mapping) else None,
            loaded=loaded if isinstance(loaded, bool) else None,
        )
        return info._with_raw(data)
