"""A GGUF header without tensors is no model: pull, import and the store scan refuse it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from llamahomed.cli import main
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.store import ModelRegistry
from tests.conftest import TINY_MODEL_ID


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def empty_gguf() -> bytes:
    """A well-formed GGUF v3 header: one metadata key, zero tensors, no data."""
    kv = _s("general.architecture") + struct.pack("<I", 8) + _s("llama")
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv
    return head + b"\0" * (-len(head) % 32)


def test_the_store_scan_lists_no_tensorless_file(models_dir: Path) -> None:
    (models_dir / "hollow.gguf").write_bytes(empty_gguf())
    registry = ModelRegistry(models_dir, Catalog.load())
    assert [e.id for e in registry.scan()] == [TINY_MODEL_ID]
    assert "no tensors" in registry.invalid[models_dir / "hollow.gguf"]


def test_import_refuses_a_tensorless_file(tmp_path: Path, models_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "hollow.gguf"
    source.write_bytes(empty_gguf())
    assert main(["models", "--models-dir", str(models_dir), "import", str(source)]) == 1
    err = capsys.readouterr().err
    assert "no tensors" in err and "imported" not in err
    assert not (models_dir / "hollow.gguf").exists()


async def test_pull_over_http_refuses_a_tensorless_file(
        aiohttp_client: Any, make_settings: Any, file_server: Any, models_dir: Path) -> None:
    from llamahomed.http.app import create_app

    served, server = file_server
    served.body = empty_gguf()
    settings = make_settings(system_settings={"pull_allowed_hosts": ["127.0.0.1"]})
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    response = await client.post("/api/v1/models/pull", headers=auth, json={
        "model": str(server.make_url("/hollow.gguf"))})
    final = [json.loads(line) for line in (await response.text()).splitlines() if line][-1]
    assert final["error"]["code"] == "not_gguf", final
    assert "no tensors" in final["error"]["message"]
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny-llama.gguf"]
    listed = await (await client.get("/api/v1/models", headers=auth)).json()
    assert [m["id"] for m in listed["models"]] == [TINY_MODEL_ID]
