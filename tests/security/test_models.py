"""Model names and files: no traversal, no escapes, no malformed GGUF ever reaches llama.cpp."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from llamahomed.http.app import create_app
from llamahomed.cli import main
from llamahomed.core.errors import InvalidRequest
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.names import check_digest, check_file_name, check_model_id, inside
from llamahomed.registry.store import ModelRegistry
from tests.conftest import TINY_MODEL_ID
from tests.security.helpers import assert_envelope, bearer

HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "models/../x", "..", "a/b", "C:\\x",
                 "..\\..\\x", "x\x00.gguf", "", " ", "~/x", "a" * 300, "x:../../y", "%2e%2e%2fx"]


@pytest.mark.parametrize("name", ["tiny-llama", "gemma3:270m", "llama3.3", "tiny-llama.gguf",
                                  "gemma3-270m:q4_k_m", "Llama-3.3-70B-Instruct-Q4_K_M"])
def test_ordinary_model_names_pass(name: str) -> None:
    assert check_model_id(name) == name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_model_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        check_model_id(name)


@pytest.mark.parametrize("name", ["../x.gguf", "/abs.gguf", "a/b.gguf", "x.bin", ".hidden.gguf",
                                  "my model.gguf", "x\n.gguf", "..gguf"])
def test_hostile_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        check_file_name(name)


def test_digests_must_be_hex_of_the_right_length() -> None:
    good = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert check_digest(good.upper()) == good
    assert check_digest(f"sha256:{good}") == good and check_digest(f"sha256-{good}") == good
    for bad in (good[:-1], good + "0", "g" * 64, "../" + good[3:], good[:32], ""):
        with pytest.raises(InvalidRequest):
            check_digest(bad)
    assert len(check_digest("ab" * 64, "sha512")) == 128


def test_the_catalog_refuses_a_bad_digest_or_file_name(tmp_path: Path) -> None:
    assert Catalog.load().models  # the shipped catalog passes
    for variant in ('file = "x.gguf"\nsha256 = "1234"', 'file = "../x.gguf"'):
        path = tmp_path / "catalog.toml"
        path.write_text(f'[[models]]\nid = "m"\n[[models.variants]]\nquantization = "Q4_0"\n{variant}\n')
        with pytest.raises(InvalidRequest):
            Catalog.load(path)


async def test_hostile_model_names_over_http_are_a_400(api: Any, auth: dict[str, str]) -> None:
    for name in HOSTILE_NAMES[:9]:
        response = await api.post("/api/v1/process", headers=auth,
                                  json={"model": name, "prompt": "a", "max_tokens": 1})
        assert response.status in (400, 422), name
        assert_envelope(await response.json(),
                        "invalid_request" if response.status == 400 else "validation_error")
    for raw in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "a%00b"):
        response = await api.get(f"/api/v1/models/{raw}", headers=auth)
        assert response.status in (400, 404), raw
        body = await response.json()
        assert body["error"]["code"] in ("invalid_request", "not_found"), raw


def _escape_link(models_dir: Path, target: Path) -> Path:
    link = models_dir / "escape.gguf"
    link.symlink_to(target)
    return link


async def test_a_symlink_out_of_the_models_dir_is_never_served(
        aiohttp_client: Any, make_settings: Any, models_dir: Path, tiny_model_file: Path) -> None:
    assert not inside(models_dir, tiny_model_file)
    _escape_link(models_dir, tiny_model_file)  # a valid GGUF, but outside the store
    (models_dir / "inner.gguf").symlink_to(models_dir / "tiny-llama.gguf")  # inside: fine
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    listed = await (await client.get("/api/v1/models", headers=auth)).json()
    assert sorted(m["id"] for m in listed["models"]) == ["inner", TINY_MODEL_ID]
    response = await client.post("/api/v1/process", headers=auth,
                                 json={"model": "escape", "prompt": "a", "max_tokens": 1})
    assert response.status == 404
    assert "outside the models dir" in assert_envelope(await response.json(), "model_not_found")[
        "message"]


def test_a_model_whose_symlink_is_swapped_after_the_scan_is_refused(
        models_dir: Path, tiny_model_file: Path) -> None:
    link = models_dir / "swap.gguf"
    link.symlink_to(models_dir / "tiny-llama.gguf")
    registry = ModelRegistry(models_dir, Catalog.load())
    groups = registry.models()
    link.unlink()
    link.symlink_to(tiny_model_file)  # now it points out of the store
    with pytest.raises(InvalidRequest, match="outside the models dir"):
        registry.resolve("swap", groups)


def malformed_files(models_dir: Path, tiny_model_file: Path) -> dict[str, str]:
    """Write broken GGUFs next to the good one; return {model id: words its error must contain}."""
    good = tiny_model_file.read_bytes()
    (models_dir / "truncated.gguf").write_bytes(good[:100])
    (models_dir / "bad-magic.gguf").write_bytes(b"GGML" + good[4:])
    absurd = bytearray(good)
    struct.pack_into("<Q", absurd, 8, 2**40)  # tensor count
    (models_dir / "absurd-count.gguf").write_bytes(bytes(absurd))
    huge = bytearray(good)
    struct.pack_into("<Q", huge, 16, 2**60)  # metadata key/value count
    (models_dir / "absurd-kv.gguf").write_bytes(bytes(huge))
    (models_dir / "past-end.gguf").write_bytes(good[:-4096])  # tensor data beyond the end
    (models_dir / "empty.gguf").write_bytes(b"")
    os.mkfifo(models_dir / "fifo.gguf")  # opening it would block forever
    (models_dir / "dir.gguf").mkdir()
    return {"truncated": "cannot fit", "bad-magic": "bad magic", "absurd-count": "absurd tensor count",
            "absurd-kv": "absurd metadata", "past-end": "past the end", "empty": "truncated",
            "fifo": "not a regular file", "dir": "not a regular file"}


async def test_malformed_model_files_are_refused_and_the_daemon_serves_the_others(
        aiohttp_client: Any, make_settings: Any, models_dir: Path, tiny_model_file: Path) -> None:
    expected = malformed_files(models_dir, tiny_model_file)
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = bearer(settings.admin_token_file.read_text().strip())
    listed = await (await client.get("/api/v1/models", headers=auth)).json()
    assert [m["id"] for m in listed["models"]] == [TINY_MODEL_ID]
    for model_id, words in expected.items():
        response = await client.post("/api/v1/process", headers=auth,
                                     json={"model": model_id, "prompt": "a", "max_tokens": 1})
        assert response.status == 404, model_id
        error = assert_envelope(await response.json(), "model_not_found")
        assert words in error["details"]["reason"], (model_id, error)
        assert error["details"]["file"] == f"{model_id}.gguf"
    served = await client.post("/api/v1/process", headers=auth,
                               json={"prompt": "the cat", "max_tokens": 4, "temperature": 0})
    data = await served.json()
    assert served.status == 200 and data["usage"]["completion_tokens"] == 4 and data["text"]
    health = await (await client.get("/health", headers=auth)).json()
    assert health["models_loaded"] == [TINY_MODEL_ID]


def test_import_refuses_malformed_files_and_leaves_the_store_unchanged(
        tmp_path: Path, models_dir: Path, tiny_model_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "incoming"
    outside.mkdir()
    expected = malformed_files(outside, tiny_model_file)
    before = sorted(p.name for p in models_dir.iterdir())
    for name in expected:
        if name in ("fifo", "dir"):
            continue
        assert main(["models", "--models-dir", str(models_dir), "import",
                     str(outside / f"{name}.gguf")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a usable GGUF file" in err, err
    (outside / "my model.gguf").write_bytes(tiny_model_file.read_bytes())
    assert main(["models", "--models-dir", str(models_dir), "import", str(outside / "my model.gguf")]) == 1
    assert "not a valid model file name" in capsys.readouterr().err
    assert sorted(p.name for p in models_dir.iterdir()) == before
