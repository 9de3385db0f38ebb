#!/usr/bin/env python3
"""What checking a token costs per request: signature, key-file stat, revocation lookup.

    python scripts/bench_auth.py [--revoked 10000] [--n 20000]

Runs against a throwaway state dir; prints microseconds per call for each part.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llamahomed.core.revocation import TokenStore
from llamahomed.core.authority import Authority


def per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revoked", type=int, default=10_000, help="revoked ids in the store")
    parser.add_argument("--n", type=int, default=20_000, help="calls per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        authority = Authority(state / "secret.key", TokenStore(state / "tokens.db"))
        store = authority.store
        store._db.execute("BEGIN")
        for i in range(args.revoked):
            store.revoke(f"{i:032x}", time.time() + 3600)
        store._db.execute("COMMIT")
        token = authority.issue("alice", 3600)
        header = f"Bearer {token}"
        claims = authority.decode(token)
        rows = [
            ("signature + claims (itsdangerous, SHA-256)",
             per_call(lambda: authority.validator.decode(token), args.n)),
            ("key file stat", per_call(lambda: os.stat(authority.key_file), args.n)),
            ("revocation check, nothing changed (PRAGMA data_version + cached answer)",
             per_call(lambda: store.revocation_reason(claims), args.n)),
            ("full Authority.check", per_call(lambda: authority.check(header), args.n)),
        ]
        other = TokenStore(state / "tokens.db")  # the CLI's connection

        reloads = max(args.n // 200, 20)
        spent = 0.0
        for i in range(reloads):
            other.revoke_user(f"nobody-{i}")  # a CLI commit (not timed)
            start = time.perf_counter()
            store.revocation_reason(claims)
            spent += time.perf_counter() - start
        rows.append((f"revocation check right after a CLI change ({args.revoked} revoked ids in the store)",
                     spent / reloads * 1e6))
        for name, micros in rows:
            print(f"{micros:10.2f} us  {name}")
        other.close()
        authority.close()


if __name__ == "__main__":
    main()
