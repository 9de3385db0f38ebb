"""The token store: which tokens were issued, which are revoked (SQLite in the state dir).

The store never holds a token itself, only its claims (``jti``, user, scopes, tier, times) and
the id of the key that signed it. Three tables:

    issued         jti, user, scopes, tier, issued_at, expires_at, key_id
    revoked        jti, revoked_at, expires_at           (one token)
    revoked_users  user, before                          (every token of a user issued before)

The daemon checks every request: the answer for a token is cached until ``PRAGMA data_version``
says some connection (the ``llamahomed token`` CLI) committed a change, so a revocation takes
effect on the running daemon at its next request, at the cost of one cheap pragma per request
and two primary-key lookups after a change (see scripts/bench_auth.py).

A store whose file is deleted or replaced while it is open would keep reading the old file
(revocation failing open: ``token revoke`` writes a new file the daemon never reads). So every
call first compares the path's ``(st_dev, st_ino)`` with the file it opened (one ``stat``) and,
when they differ, opens the file now at the path (creating it if it is gone) and copies into it
what the old one knew: issuance records and revocations only ever accumulate, so deleting or
restoring ``tokens.db`` never un-revokes a token the daemon had seen revoked.

The journal is SQLite's rollback journal, not WAL: with WAL a ``-wal`` and ``-shm`` file outlive
every transaction, and a database re-created at the same path would share them with the
deleted one (SQLite's "unlinking a database file while in use" corruption case).
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import structlog
from llamahome.auth import TokenClaims

from llamahomed.core.files import PRIVATE_DIR, open_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    jti TEXT PRIMARY KEY, user TEXT NOT NULL, scopes TEXT NOT NULL, tier TEXT NOT NULL,
    issued_at REAL NOT NULL, expires_at REAL, key_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (
    jti TEXT PRIMARY KEY, revoked_at REAL NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS revoked_users (
    user TEXT PRIMARY KEY, before REAL NOT NULL);
"""


_MAX_CACHED = 100_000
_CARRIED = (("issued", "INSERT OR IGNORE INTO issued VALUES (?, ?, ?, ?, ?, ?, ?)"),
            ("revoked", "INSERT OR IGNORE INTO revoked VALUES (?, ?, ?)"),
            ("revoked_users", "INSERT INTO revoked_users VALUES (?, ?) ON CONFLICT(user) DO "
                              "UPDATE SET before = MAX(before, excluded.before)"))

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IssuedToken:
    """One issuance record (never the token)."""

    token_id: str
    user_id: str
    scopes: tuple[str, ...]
    tier: str
    issued_at: float
    expires_at: float | None
    key_id: str
    revoked: bool

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class TokenStore:
    """SQLite store of issued and revoked tokens; one connection per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = (0, 0)
        self._db = self._open()
        self._version = -1
        self._answers: dict[tuple[str, str, float], str | None] = {}

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        os.close(open_private(self.path, os.O_RDWR))  # private before SQLite touches it
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        with suppress(sqlite3.OperationalError):  # busy: another process still has it in WAL
            db.execute("PRAGMA journal_mode=DELETE")
        db.executescript(_SCHEMA)
        stat = os.stat(self.path)
        self._identity = (stat.st_dev, stat.st_ino)
        return db

    def _current(self) -> sqlite3.Connection:
        """The connection to the file now at ``path``: reopened (and the old file's records
        carried over) when the file was deleted or replaced since it was opened."""
        try:
            stat = os.stat(self.path)
            if (stat.st_dev, stat.st_ino) == self._identity:
                return self._db
        except FileNotFoundError:
            pass
        old, self._db = self._db, self._open()
        try:
            carried = 0
            for table, insert in _CARRIED:
                rows = old.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - constants
                self._db.executemany(insert, rows)
                carried += len(rows)
        finally:
            old.close()
        self._version = -1
        self._answers.clear()
        log.warning("token_store_reopened", path=str(self.path), carried_records=carried)
        return self._db

    def close(self) -> None:
        self._db.close()

    # -- issuing --------------------------------------------------------------------------
    def record(self, claims: TokenClaims, key_id: str) -> None:
        """Remember that a token with these claims was issued (signed by ``key_id``)."""
        self._current().execute(
            "INSERT OR REPLACE INTO issued VALUES (?, ?, ?, ?, ?, ?, ?)",
            (claims.token_id, claims.user_id, " ".join(claims.scopes), claims.tier,
             claims.issued_at, claims.expires_at, key_id))

    def issued(self) -> list[IssuedToken]:
        """Every issuance record, oldest first, with whether it is revoked."""
        rows = self._current().execute(
            "SELECT i.jti, i.user, i.scopes, i.tier, i.issued_at, i.expires_at, i.key_id, "
            "(r.jti IS NOT NULL OR (u.before IS NOT NULL AND i.issued_at <= u.before)) "
            "FROM issued i LEFT JOIN revoked r ON r.jti = i.jti "
            "LEFT JOIN revoked_users u ON u.user = i.user ORDER BY i.issued_at").fetchall()
        return [IssuedToken(jti, user, tuple(scopes.split()), tier, iat, exp, kid, bool(revoked))
                for jti, user, scopes, tier, iat, exp, kid, revoked in rows]

    def get(self, token_id: str) -> IssuedToken | None:
        """The issuance record of one token id, if this store issued it."""
        return next((t for t in self.issued() if t.token_id == token_id), None)

    # -- revoking -------------------------------------------------------------------------
    def revoke(self, token_id: str, expires_at: float | None = None) -> None:
        """Revoke one token by its id (``jti``)."""
        record = self._current().execute("SELECT expires_at FROM issued WHERE jti = ?",
                                  (token_id,)).fetchone()
        if record is not None:
            expires_at = record[0]
        self._current().execute("INSERT OR REPLACE INTO revoked VALUES (?, ?, ?)",
                         (token_id, time.time(), expires_at))
        self._answers.clear()  # data_version moves only for other connections' commits

    def revoke_user(self, user_id: str, before: float | None = None) -> None:
        """Revoke every token of ``user_id`` issued before ``before`` (default: now)."""
        self._current().execute("INSERT OR REPLACE INTO revoked_users VALUES (?, ?)",
                         (user_id, time.time() if before is None else before))
        self._answers.clear()

    def revocation_reason(self, claims: TokenClaims) -> str | None:
        """Why these claims are revoked, or None.

        Cheap: one ``stat`` and one ``PRAGMA data_version`` per call; answers are cached per
        token until any connection commits a change, then looked up again by primary key.
        """
        db = self._current()  # one stat: has tokens.db been deleted or replaced?
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._answers.clear()
            self._version = version
        key = (claims.token_id, claims.user_id, claims.issued_at)
        if key in self._answers:
            return self._answers[key]
        reason: str | None = None
        if db.execute("SELECT 1 FROM revoked WHERE jti = ?", (claims.token_id,)).fetchone():
            reason = "this token was revoked"
        else:
            row = db.execute("SELECT before FROM revoked_users WHERE user = ?",
                             (claims.user_id,)).fetchone()
            if row is not None and claims.issued_at <= row[0]:
                reason = (f"every token of user {claims.user_id!r} issued before the revocation "
                          "was revoked")
        if len(self._answers) >= _MAX_CACHED:
            self._answers.clear()
        self._answers[key] = reason
        return reason

    # -- keys -----------------------------------------------------------------------------
    def key_needed_until(self, key_id: str) -> float:
        """When the last live token signed by ``key_id`` expires: 0.0 if none is live,
        ``inf`` if one never expires."""
        now = time.time()
        latest = 0.0
        for token in self.issued():
            if token.key_id != key_id or token.revoked or token.expired(now):
                continue
            if token.expires_at is None:
                return float("inf")
            latest = max(latest, token.expires_at)
        return latest

    def prune(self, now: float | None = None) -> int:
        """Forget revocations of tokens that have expired anyway; return how many."""
        now = time.time() if now is None else now
        cursor = self._current().execute(
            "DELETE FROM revoked WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
        return cursor.rowcount
