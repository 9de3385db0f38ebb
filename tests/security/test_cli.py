"""``llamahomed token ...``: create, list, revoke, rotate-secret, and what they refuse."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest

from llamahomed.cli import main
from llamahomed.core.authority import Authority, read_keys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["token", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_only_the_token_and_records_its_claims(
        settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "create", "--user", "alice", "--expires-in", "600",
                         "--scope", "admin", "--scope", "inference", "--tier", "enterprise")
    assert code == 0 and len(out.splitlines()) == 1
    token = out.strip()
    authority = Authority.from_settings(settings)
    try:
        claims = authority.decode(token)
        assert (claims.user_id, claims.scopes, claims.tier) == ("alice", ("admin", "inference"),
                                                                "enterprise")
        assert claims.expires_at == pytest.approx(claims.issued_at + 600)
        assert claims.token_id in err and token not in err
    finally:
        authority.close()
    for path in (settings.secret_file, settings.token_store_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_that_never_expires(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "create", "--user", "svc", "--expires-in", "0")
    assert code == 0
    code, listing, _ = run(capsys, "list", "--json")
    record = next(t for t in json.loads(listing)["tokens"] if t["user"] == "svc")
    assert record["expires_at"] is None and record["status"] == "active"


@pytest.mark.parametrize("argv, words", [
    (["--user", "a", "--tier", "Pro Plus"], "tier"),
    (["--user", "a\x00b"], "user"),
    (["--user", "a", "--expires-in", "-5"], "expires-in"),
])
def test_create_refuses_bad_fields_with_one_line(capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], words: str) -> None:
    code, out, err = run(capsys, "create", *argv)
    assert code == 1 and out == "" and words in err and len(err.strip().splitlines()) == 1


def test_list_shows_claims_and_status_but_never_a_token(
        settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = [run(capsys, "create", "--user", u)[1].strip() for u in ("alice", "bob")]
    run(capsys, "revoke", "--user", "bob")
    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = {line.split()[1]: line.split()[-1] for line in out.splitlines()[1:]}
    assert rows == {"alice": "active", "bob": "revoked"}
    code, data, _ = run(capsys, "list", "--json")
    for token in tokens:
        assert token not in out and token not in data
    assert len(json.loads(data)["keys"]) == len(read_keys(settings.secret_file))


def test_revoke_refuses_unknown_or_ambiguous_ids(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("not-an-id", "../../x", "abc"):
        code, _, err = run(capsys, "revoke", bad)
        assert code == 1 and "not a token id" in err
    code, _, err = run(capsys, "revoke", "0123456789ab")
    assert code == 1 and "no issued token" in err
    code, out, _ = run(capsys, "revoke", "0" * 32)  # a full id not in the store: revoked anyway
    assert code == 0 and "revoked all the same" in out
    with pytest.raises(SystemExit):
        main(["token", "revoke"])  # an id or --user is required


def test_rotate_secret_reports_kept_and_dropped_keys(settings: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "create", "--user", "alice", "--expires-in", "3600")
    code, out, _ = run(capsys, "rotate-secret")
    assert code == 0 and "new signing key" in out and "kept key" in out
    code, out, _ = run(capsys, "rotate-secret", "--drop-old")
    assert code == 0 and out.count("dropped key") == 2
    assert len(read_keys(settings.secret_file)) == 1
