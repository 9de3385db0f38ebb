"""Bearer tokens over the API (admin): ``GET/POST /api/v1/tokens``, ``DELETE /api/v1/tokens/{id}``.

The same token store as ``llamahomed token``; a new token is in the creation answer only (the
store keeps its id and claims, never the token), and no route ever lists one.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.core.errors import NotFound
from llamahomed.core.revocation import IssuedToken
from llamahomed.http.keys import AUTHORITY
from llamahomed.http.schemas import parse_body

MAX_LIFETIME = 366 * 86400


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=128, description="who the token is for")
    scopes: list[str] = Field(default_factory=lambda: ["inference"], min_length=1, max_length=2,
                              description="inference and/or admin")
    tier: str = Field("basic", description="rate-limit tier")
    expires_in: float | None = Field(30 * 86400, gt=0, le=MAX_LIFETIME,
                                     description="lifetime in seconds (null: never expires)")


def token_view(token: IssuedToken, now: float) -> dict[str, Any]:
    status = "revoked" if token.revoked else "expired" if token.expired(now) else "active"
    return {"id": token.token_id, "user": token.user_id, "scopes": list(token.scopes),
            "tier": token.tier, "issued_at": token.issued_at, "expires_at": token.expires_at,
            "status": status}


async def list_tokens(request: web.Request) -> web.Response:
    issued = request.app[AUTHORITY].issued()  # the store's sqlite lives on the loop's thread
    now = time.time()
    return web.json_response({"tokens": [token_view(t, now) for t in issued]})


async def create_token(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenRequest)
    authority = request.app[AUTHORITY]
    token = authority.issue(body.user, body.expires_in, tuple(dict.fromkeys(body.scopes)),
                            body.tier)
    claims = authority.validator.decode(token)
    return web.json_response({"token": token, "id": claims.token_id, "user": claims.user_id,
                              "scopes": list(claims.scopes), "tier": claims.tier,
                              "expires_at": claims.expires_at})


async def revoke_token(request: web.Request) -> web.Response:
    wanted = request.match_info["token_id"].lower()
    authority = request.app[AUTHORITY]
    issued = authority.issued()
    if not any(t.token_id == wanted for t in issued):
        raise NotFound(f"no issued token has the id {wanted!r}",
                       details={"token_id": wanted})
    authority.store.revoke(wanted)
    return web.json_response({"id": wanted, "status": "revoked"})
