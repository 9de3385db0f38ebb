"""The web console: its static files at ``/ui/``, and the login ticket ``llamahomed ui`` uses.

The files ship inside the package (``llamahomed/console/static``); nothing is fetched from the
network. Every page is served with a strict Content-Security-Policy (scripts and styles from
this origin only, no inline script, no framing), so the console can do nothing the API does
not let its token do. It authenticates like any client: a bearer token that the page keeps in
``sessionStorage`` (no cookie, so no CSRF surface).

Login without pasting a token: ``llamahomed ui`` asks ``POST /api/v1/console/ticket`` (admin)
for a single-use ticket worth a fresh session token (the caller's scopes and tier, 8 hours),
opens ``/ui/#ticket=...`` (a URL fragment never reaches a server or its logs), and the page
trades it at ``POST /api/v1/console/login`` within a minute.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llamahomed.core.errors import AuthenticationFailed, NotFound, ServerBusy
from llamahomed.http.keys import AUTHORITY, CLAIMS
from llamahomed.http.schemas import parse_body

STATIC = Path(__file__).resolve().parents[2] / "console" / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin", "Cache-Control": "no-cache",
}
TICKET_TTL = 60.0
SESSION_LIFETIME = 8 * 3600.0
MAX_TICKETS = 32


def _file(name: str) -> web.Response:
    path = STATIC / name
    kind = TYPES.get(path.suffix)
    if kind is None or not path.is_file() or path.parent != STATIC:
        raise NotFound(f"no console file {name!r}")
    return web.Response(body=path.read_bytes(), content_type=kind,
                        charset="utf-8" if kind != "image/svg+xml" else None,
                        headers=SECURITY_HEADERS)


async def index(request: web.Request) -> web.Response:
    if request.path == "/ui":
        raise web.HTTPPermanentRedirect("/ui/", headers=SECURITY_HEADERS)
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


@dataclass
class LoginTickets:
    """Single-use tickets, each worth one session token, for ``TICKET_TTL`` seconds."""

    clock: Callable[[], float] = time.monotonic
    _tickets: dict[str, tuple[str, float, float | None]] = field(default_factory=dict)

    def issue(self, token: str, expires_at: float | None) -> str:
        now = self.clock()
        for key in [k for k, (_, until, _) in self._tickets.items() if until <= now]:
            del self._tickets[key]
        if len(self._tickets) >= MAX_TICKETS:
            raise ServerBusy("too many unused console tickets; retry in a minute",
                             details={"retry_after": int(TICKET_TTL)})
        ticket = secrets.token_urlsafe(32)
        self._tickets[hashlib.sha256(ticket.encode()).hexdigest()] = (token, now + TICKET_TTL,
                                                                       expires_at)
        return ticket

    def redeem(self, ticket: str) -> tuple[str, float | None]:
        entry = self._tickets.pop(hashlib.sha256(ticket.encode()).hexdigest(), None)
        if entry is None or entry[1] <= self.clock():
            raise AuthenticationFailed("invalid, expired or already used console ticket; run "
                                       "`llamahomed ui` again, or paste a token")
        return entry[0], entry[2]


CONSOLE_TICKETS = web.AppKey("console_tickets", LoginTickets)


def setup(app: web.Application) -> None:
    app[CONSOLE_TICKETS] = LoginTickets()


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(..., min_length=16, max_length=128)


async def ticket(request: web.Request) -> web.Response:
    """A console login ticket for a new session token with the caller's scopes and tier."""
    claims = request[CLAIMS]
    authority = request.app[AUTHORITY]
    lifetime = SESSION_LIFETIME
    if claims.expires_at is not None:  # never outlive the token it was bought with
        lifetime = min(lifetime, claims.expires_at - time.time())
    token = authority.issue(claims.user_id, max(1.0, lifetime), tuple(claims.scopes),
                            claims.tier)  # the token store's sqlite lives on the loop's thread
    expires_at = authority.validator.decode(token).expires_at
    issued = request.app[CONSOLE_TICKETS].issue(token, expires_at)
    return web.json_response({"ticket": issued, "expires_in": int(TICKET_TTL),
                              "path": f"/ui/#ticket={issued}"})


async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, LoginRequest)
    token, expires_at = request.app[CONSOLE_TICKETS].redeem(body.ticket)
    return web.json_response({"token": token, "expires_at": expires_at},
                             headers={"Cache-Control": "no-store"})
