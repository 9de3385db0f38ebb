"""``models import`` of a symlink: the store gets the target's bytes (a hard link or a copy),
never the link itself, so the imported model is listed and serves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from llamahomed.cli import main
from llamahomed.http.app import create_app


@pytest.mark.parametrize("relative", [True, False])
async def test_an_imported_symlink_is_listed_and_serves(
        relative: bool, tmp_path: Path, tiny_model_file: Path, aiohttp_client: Any,
        make_settings: Any, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    downloads = tmp_path / "downloads"
    (downloads / "real").mkdir(parents=True)
    target = downloads / "real" / "mine-llama.gguf"
    os.link(tiny_model_file, target)
    link = downloads / "linked-llama.gguf"
    link.symlink_to(Path("real") / target.name if relative else target)

    assert main(["models", "--models-dir", str(models_dir), "import", str(link)]) == 0
    assert "imported linked-llama.gguf as linked-llama:f32" in capsys.readouterr().out
    stored = models_dir / "linked-llama.gguf"
    assert not stored.is_symlink() and stored.read_bytes() == tiny_model_file.read_bytes()

    link.unlink()  # the store's copy does not depend on the link
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
    listed = await (await client.get("/api/v1/models", headers=auth)).json()
    assert "linked-llama" in [m["id"] for m in listed["models"]]
    response = await client.post("/api/v1/process", headers=auth, json={
        "model": "linked-llama", "prompt": "hi", "max_tokens": 2, "temperature": 0})
    assert response.status == 200, await response.text()


def test_a_dangling_symlink_is_refused(tmp_path: Path, models_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "gone.gguf"
    link.symlink_to(tmp_path / "nowhere.gguf")
    assert main(["models", "--models-dir", str(models_dir), "import", str(link)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not (models_dir / "gone.gguf").exists() and not (models_dir / "gone.gguf").is_symlink()
