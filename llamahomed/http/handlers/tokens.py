"""POST /tokenize and /detokenize: llama-server's shapes, on the model's own vocabulary.

The model's worker does the work (it owns the model; the daemon never loads llama.cpp), so a
model that is not loaded yet is loaded first, as for a generation.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.http.keys import INFERENCE
from llamahomed.http.schemas import parse_body

MAX_CONTENT = 4_000_000
MAX_TOKENS = 1_000_000
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True)]


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)

    content: str = Field(..., max_length=MAX_CONTENT, description="The text to tokenize.")
    add_special: bool = Field(False, description="Add the vocab's BOS (and EOS) tokens.")
    parse_special: bool = Field(True, description="Read special tokens spelled in the text "
                                                  "(<|im_start|>) as those tokens.")
    with_pieces: bool = Field(False, description="Answer {id, piece} objects instead of ids.")
    model: str | None = Field(None, min_length=1, max_length=200,
                              description="The model whose vocabulary to use (default model).")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    tokens: list[TokenId] = Field(..., max_length=MAX_TOKENS, description="Token ids.")
    model: str | None = Field(None, min_length=1, max_length=200,
                              description="The model whose vocabulary to use (default model).")


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int] = Field(description="The token's text, or its bytes where they are "
                                               "not whole UTF-8.")


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeResponse(BaseModel):
    content: str


async def tokenize(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenizeRequest)
    _, answer = await request.app[INFERENCE].tokenize(
        body.model, body.content, add_special=body.add_special, parse_special=body.parse_special,
        with_pieces=body.with_pieces)
    if answer.pieces is None:
        return web.json_response({"tokens": answer.tokens})
    return web.json_response({"tokens": [{"id": token, "piece": piece}
                                         for token, piece in zip(answer.tokens, answer.pieces)]})


async def detokenize(request: web.Request) -> web.Response:
    body = await parse_body(request, DetokenizeRequest)
    _, content = await request.app[INFERENCE].detokenize(body.model, body.tokens)
    return web.json_response({"content": content})
