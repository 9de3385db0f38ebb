"""``POST /v1/embeddings``: OpenAI's embeddings, from every model.

The model's worker embeds (``engine/worker/embed.py``): the GGUF's pooling where it declares one
(an embedding model), mean pooling otherwise (a text-generation model), every vector
L2-normalised as OpenAI, llama-server and Ollama return them. ``input`` is a string, a list of
strings, a list of token ids or a list of token-id lists (OpenAI's four forms; strings and token
lists may also mix, as llama-server allows); token ids are checked against the model's
vocabulary. ``encoding_format`` is ``float`` (the default) or ``base64`` (little-endian float32
bytes, what OpenAI's SDK asks for by default), in any case. An input longer than the model's
context is refused (400 ``context_length_exceeded``), never truncated; ``dimensions`` is refused
(400): the vectors have the model's own size.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.core.errors import InvalidRequest
from llamahomed.http.keys import INFERENCE
from llamahomed.http.schemas import parse_body

MAX_EMBED_INPUTS = 256
_TOKEN_LIST = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_INPUT_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "minLength": 1}, _TOKEN_LIST,
    {"type": "array", "minItems": 1, "maxItems": MAX_EMBED_INPUTS,
     "items": {"anyOf": [{"type": "string", "minLength": 1}, _TOKEN_LIST]}}]}


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings body; fields this daemon does not know are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    input: Any = Field(..., json_schema_extra=_INPUT_SCHEMA,
                       description="A string, a list of strings, a list of token ids, or a list "
                                   "of token-id lists.")
    model: str | None = Field(None, min_length=1, max_length=200)
    encoding_format: str | None = Field(None, description="float (default) or base64, any case.")
    dimensions: int | None = Field(None, description="Refused: vectors have the model's size.")
    user: str | None = Field(None, max_length=256)

    def inputs(self) -> list[str | list[int]]:
        """The inputs, one per vector, checked (a 400 naming ``input`` where they are not)."""
        given = self.input
        if isinstance(given, str) or _is_token_list(given):
            given = [given]
        if not isinstance(given, list) or not given:
            raise bad_field("input", "a string, a list of strings, a list of token ids or a list "
                                     "of token-id lists, not empty")
        if len(given) > MAX_EMBED_INPUTS:
            raise bad_field("input", f"at most {MAX_EMBED_INPUTS} inputs per request "
                                     f"(got {len(given)})")
        for index, item in enumerate(given):
            if isinstance(item, str):
                if not item:
                    raise bad_field("input", f"input[{index}] is an empty string")
            elif not _is_token_list(item):
                raise bad_field("input", f"input[{index}] must be a non-empty string or a "
                                         "non-empty list of token ids (integers >= 0)")
        return [item if isinstance(item, str) else list(item) for item in given]

    def encoding(self) -> str:
        """``float`` or ``base64`` (``encoding_format`` in any case; float when left out)."""
        encoding = (self.encoding_format or "float").lower()
        if encoding not in ("float", "base64"):
            raise bad_field("encoding_format",
                            f"must be 'float' or 'base64', not {self.encoding_format!r}")
        return encoding


def _is_token_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(type(t) is int and 0 <= t < 2**31 for t in value))


def bad_field(field: str, why: str) -> InvalidRequest:
    """A 400 whose OpenAI ``param`` is ``field``."""
    return InvalidRequest(f"{field}: {why}",
                          details={"errors": [{"field": field, "message": why}]})


async def embeddings(request: web.Request) -> web.Response:
    body = await parse_body(request, EmbeddingRequest)
    if body.dimensions is not None:
        raise bad_field("dimensions", "not supported: the vectors have the model's own size "
                                      "(its n_embd); leave dimensions out")
    inputs, encoding = body.inputs(), body.encoding()
    entry, done = await request.app[INFERENCE].embed(body.model, inputs)
    vectors = done.embeddings or []
    data = [{"object": "embedding", "index": i, "embedding": encode(vector, encoding)}
            for i, vector in enumerate(vectors)]
    return web.json_response({"object": "list", "data": data, "model": entry.id,
                              "usage": {"prompt_tokens": done.usage["prompt_tokens"],
                                        "total_tokens": done.usage["total_tokens"]}})


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """``float``: the list; ``base64``: little-endian float32 bytes (what OpenAI's SDK asks for)."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
