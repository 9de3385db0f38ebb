"""``llamahomed token create|list|revoke|rotate-secret``: tokens without a running daemon.

Everything goes through the state dir (key file and token store), which the running daemon
watches, so each command takes effect on it at its next request. Only ``create`` prints a token
(on stdout, nothing else there); no command ever logs one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from llamahomed.core.authority import (
    ADMIN_SCOPES,
    Authority,
    ensure_admin_token,
    key_id,
    revoke_admin_token,
)
from llamahomed.core.errors import InvalidRequest
from llamahomed.core.revocation import IssuedToken
from llamahomed.core.settings import Settings

DEFAULT_LIFETIME = 30 * 86400
_JTI_RE = re.compile(r"^[0-9a-f]{8,32}$")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    token = sub.add_parser("token", help="bearer tokens: create, list, revoke, rotate the secret",
                           parents=[common]).add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="print a new token", parents=[common])
    create.add_argument("--user", required=True, help="who the token is for (its subject)")
    create.add_argument("--expires-in", type=int, default=DEFAULT_LIFETIME, metavar="SECONDS",
                        help="lifetime in seconds (default 30 days; 0 = never expires)")
    create.add_argument("--scope", action="append", choices=list(ADMIN_SCOPES[::-1]),
                        help="a scope; repeat for several (default: inference)")
    create.add_argument("--tier", default="basic",
                        help="rate-limit tier, e.g. basic, pro, enterprise (default basic)")
    listing = token.add_parser("list", help="tokens issued (never the tokens themselves)",
                               parents=[common])
    listing.add_argument("--json", action="store_true", help="one JSON document")
    revoke = token.add_parser("revoke", help="revoke one token, or every token of a user",
                              parents=[common])
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="token id (from `token list`; a unique prefix will do)")
    which.add_argument("--user", help="revoke every token of this user issued until now")
    rotate = token.add_parser("rotate-secret", help="sign with a new key from now on",
                              parents=[common])
    rotate.add_argument("--drop-old", action="store_true",
                        help="forget the older keys at once: every token they signed stops working")


def run(args: argparse.Namespace, settings: Settings) -> int:
    authority = Authority.from_settings(settings)
    try:
        return _ACTIONS[args.action](args, settings, authority)
    finally:
        authority.close()


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))


def _create(args: argparse.Namespace, settings: Settings, authority: Authority) -> int:
    if args.expires_in < 0:
        raise InvalidRequest("--expires-in must be >= 0 (0: never expires)")
    token = authority.issue(args.user, args.expires_in or None, tuple(args.scope or ("inference",)),
                            args.tier)
    claims = authority.validator.decode(token)
    print(token)
    print(f"token {claims.token_id} for {claims.user_id}: scopes {','.join(claims.scopes)}, "
          f"tier {claims.tier}, expires {_when(claims.expires_at)}", file=sys.stderr)
    return 0


def _status(token: IssuedToken, now: float) -> str:
    return "revoked" if token.revoked else "expired" if token.expired(now) else "active"


def _list(args: argparse.Namespace, settings: Settings, authority: Authority) -> int:
    now = time.time()
    tokens = authority.issued()
    if args.json:
        print(json.dumps({"tokens": [
            {"id": t.token_id, "user": t.user_id, "scopes": list(t.scopes), "tier": t.tier,
             "issued_at": t.issued_at, "expires_at": t.expires_at, "key_id": t.key_id,
             "status": _status(t, now)} for t in tokens],
            "keys": [key_id(k) for k in authority.keys]}, indent=2))
        return 0
    print(f"{'ID':<32}  {'USER':<16} {'SCOPES':<16} {'TIER':<10} {'EXPIRES':<20} STATUS")
    for t in tokens:
        print(f"{t.token_id:<32}  {t.user_id:<16} {','.join(t.scopes):<16} {t.tier:<10} "
              f"{_when(t.expires_at):<20} {_status(t, now)}")
    return 0


def _revoke(args: argparse.Namespace, settings: Settings, authority: Authority) -> int:
    if args.user:
        authority.store.revoke_user(args.user)
        print(f"revoked every token of {args.user!r} issued until now")
        return 0
    wanted = args.id.strip().lower()
    if not _JTI_RE.match(wanted):
        raise InvalidRequest(f"{args.id!r} is not a token id (8 to 32 hex digits; see `token list`)")
    matches = [t for t in authority.issued() if t.token_id.startswith(wanted)]
    if len(matches) > 1:
        raise InvalidRequest(f"{args.id!r} matches {len(matches)} tokens; give more digits")
    if matches:
        authority.store.revoke(matches[0].token_id)
        print(f"revoked token {matches[0].token_id} of {matches[0].user_id!r}")
    elif len(wanted) == 32:
        authority.store.revoke(wanted)
        print(f"revoked token {wanted} (not issued by this store; revoked all the same)")
    else:
        raise InvalidRequest(f"no issued token starts with {args.id!r}; see `llamahomed token list`")
    return 0


def _rotate(args: argparse.Namespace, settings: Settings, authority: Authority) -> int:
    revoke_admin_token(settings, authority)
    rotation = authority.rotate(drop_old=args.drop_old)
    ensure_admin_token(settings, authority)
    print(f"new signing key {rotation.new_key_id}; the admin token in "
          f"{settings.admin_token_file} was renewed")
    for kid, until in rotation.kept.items():
        print(f"kept key {kid} for tokens it signed, until {_when(None if until == float('inf') else until)}")
    for kid in rotation.dropped:
        print(f"dropped key {kid}")
    return 0


_ACTIONS = {"create": _create, "list": _list, "revoke": _revoke, "rotate-secret": _rotate}
