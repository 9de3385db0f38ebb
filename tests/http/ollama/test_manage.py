"""Model management through Ollama's routes with the official client: pull (from a local file
server, through the store's one pull and its policy), copy, delete, blobs and create."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import ollama
import pytest

from tests.fixtures.tiny_gguf import write_tiny_llama


async def _names(oll: ollama.AsyncClient) -> list[str]:
    return sorted(m.model or "" for m in (await oll.list()).models)


async def test_pull_a_url_with_ollamas_progress_then_it_serves(
        oll: ollama.AsyncClient, file_server: Any, models_dir: Path, tmp_path: Path) -> None:
    served, server = file_server
    served.body = write_tiny_llama(tmp_path / "q8.gguf", ftype="q8_0").read_bytes()
    url = str(server.make_url("/tiny-llama-Q8_0.gguf"))
    events = [e async for e in await oll.pull(url, stream=True)]
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [e for e in events if (e.status or "").startswith("pulling ") and e.digest]
    assert progress and progress[-1].completed == progress[-1].total == len(served.body)
    assert all(e.digest == progress[0].digest for e in progress)
    assert (models_dir / "tiny-llama-Q8_0.gguf").read_bytes() == served.body
    names = await _names(oll)
    assert names == ["tiny-llama:f32", "tiny-llama:latest", "tiny-llama:q8_0"]
    answer = await oll.generate(model="tiny-llama:q8_0", prompt="hi", options={"num_predict": 3})
    assert answer.eval_count == 3
    # stream=false: one status object; a failure is Ollama's error with the store's reason
    again = await oll.pull(str(server.make_url("/other.gguf")))
    assert again.status == "success" and (models_dir / "other.gguf").exists()
    served.status = 404
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.pull(str(server.make_url("/gone.gguf")))
    assert caught.value.status_code == 404


async def test_a_failure_after_the_first_line_is_an_error_line(
        api: Any, auth: dict[str, str], file_server: Any, models_dir: Path) -> None:
    served, server = file_server
    served.drop_after, served.drops = 1000, 10  # the connection dies mid-body, every time
    oll = ollama.AsyncClient(host=str(api.make_url("")), headers=auth)
    try:
        with pytest.raises(ollama.ResponseError) as caught:
            async for _ in await oll.pull(str(server.make_url("/cut.gguf")), stream=True):
                pass
        assert caught.value.error
    finally:
        await oll.close()
    assert not (models_dir / "cut.gguf").exists()


async def test_pull_names_and_policy(oll: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.pull("no-such-model")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.pull("https://evil.example/x.gguf")
    assert caught.value.status_code in (400, 403), caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.pull("llama3.2-1b:q9_9")
    assert caught.value.status_code == 400


async def test_copy_is_a_second_name_and_delete_removes_one(
        oll: ollama.AsyncClient, models_dir: Path) -> None:
    copied = await oll.copy("tiny-llama", "mine:v2")
    assert copied.status == "success"
    assert await _names(oll) == ["mine-v2:latest", "tiny-llama:latest"]
    original, twin = models_dir / "tiny-llama.gguf", models_dir / "mine-v2.gguf"
    assert twin.stat().st_ino == original.stat().st_ino  # a hard link: no disk used
    answer = await oll.generate(model="mine:v2", prompt="hi", options={"num_predict": 2})
    assert answer.eval_count == 2
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.copy("tiny-llama", "mine:v2")
    assert caught.value.status_code == 409
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.copy("nope", "other")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.copy("tiny-llama", "../../etc/passwd")
    assert caught.value.status_code == 400

    assert (await oll.delete("mine:v2")).status == "success"  # loaded: unloaded first
    assert not twin.exists() and original.exists()
    assert await _names(oll) == ["tiny-llama:latest"]
    assert not (await oll.ps()).models
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.delete("mine:v2")
    assert caught.value.status_code == 404 and caught.value.error == "model 'mine:v2' not found"


async def test_create_from_an_uploaded_blob_and_from_a_model(
        oll: ollama.AsyncClient, api: Any, auth: dict[str, str], tmp_path: Path) -> None:
    upload = write_tiny_llama(tmp_path / "upload.gguf", name="uploaded", ftype="q8_0")
    digest = await oll.create_blob(upload)
    assert digest == "sha256:" + hashlib.sha256(upload.read_bytes()).hexdigest()
    assert (await api.head(f"/api/blobs/{digest}", headers=auth)).status == 200
    events = [e async for e in await oll.create("uploaded", files={"upload.gguf": digest},
                                                 stream=True)]
    assert [e.status for e in events][-1] == "success"
    assert "uploaded:latest" in await _names(oll)
    assert (await oll.show("uploaded")).details.quantization_level == "Q8_0"  # type: ignore[union-attr]
    answer = await oll.generate(model="uploaded", prompt="hi", options={"num_predict": 2})
    assert answer.eval_count == 2
    made = await oll.create("from-tiny", from_="tiny-llama")
    assert made.status == "success" and "from-tiny:latest" in await _names(oll)

    missing = "sha256:" + "0" * 64
    assert (await api.head(f"/api/blobs/{missing}", headers=auth)).status == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.create("ghost", files={"x.gguf": missing})
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await oll.create("other", from_="tiny-llama", system="be nice")
    assert caught.value.status_code == 400 and "system" in caught.value.error


async def test_blob_uploads_are_verified_and_path_safe(api: Any, auth: dict[str, str],
                                                      settings: Any) -> None:
    body = b"GGUF not really"
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    answer = await api.post(f"/api/blobs/{wrong}", headers=auth, data=body)
    assert answer.status == 400 and "digest mismatch" in (await answer.json())["error"]
    blobs = settings.models_path / ".blobs"
    assert not any(blobs.iterdir())  # nothing kept, not even the partial file
    for bad in ("sha256:..%2F..%2Fx", "sha256:abc", "md5:" + "0" * 32, "0" * 64):
        answer = await api.post(f"/api/blobs/{bad}", headers=auth, data=body)
        assert answer.status in (400, 404), bad
    right = "sha256:" + hashlib.sha256(body).hexdigest()
    assert (await api.post(f"/api/blobs/{right}", headers=auth, data=body)).status == 201
    # a blob that is no GGUF does not become a model
    answer = await api.post("/api/create", headers=auth, json={
        "model": "junk", "files": {"junk.gguf": right}, "stream": False})
    assert answer.status == 400 and "GGUF" in (await answer.json())["error"]
    assert not (settings.models_path / "junk.gguf").exists()
    user_upload = await api.post(f"/api/blobs/{right}", data=body)
    assert user_upload.status == 401
