"""What a model id, a model file name and a digest may look like, and where a model file may be.

Nothing a client sends is ever joined to a path: model ids are looked up among the files the
store found. These checks make the rules explicit anyway, so a hostile name is refused with a
clear 400 instead of being looked up: no path separators, no ``..``, no absolute paths, no
control characters, and every model file resolves (symlinks followed) inside the models dir.
"""

from __future__ import annotations

import re
from pathlib import Path

from llamahomed.core.errors import InvalidRequest
from llamahomed.core.settings import MODEL_NAME

FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,195}\.gguf$")
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}


def check_model_id(name: str) -> str:
    """A model id, ``id:quant``, alias or file name as a request may give it (else 400)."""
    text = name.strip()
    if not MODEL_NAME.match(text):
        raise InvalidRequest(
            f"{name[:100]!r} is not a valid model name: use letters, digits, '.', '_', '-' "
            "(and one ':' before a quantization), no paths", details={"model": name[:200]})
    return text


def check_file_name(name: str) -> str:
    """A model file name in the store: a plain ``*.gguf`` name, never a path."""
    if not FILE_NAME_RE.match(name) or ".." in name:
        raise InvalidRequest(
            f"{name[:100]!r} is not a valid model file name: a plain name ending in .gguf "
            "(letters, digits, '.', '_', '+', '-'), no directories")
    return name


def check_digest(digest: str, algorithm: str = "sha256") -> str:
    """A hex digest of the right length, lower-cased (``sha256:`` prefix allowed)."""
    text = digest.strip().lower()
    if text.startswith(f"{algorithm}:") or text.startswith(f"{algorithm}-"):
        text = text[len(algorithm) + 1:]
    length = DIGEST_LENGTHS[algorithm]
    if len(text) != length or not all(c in "0123456789abcdef" for c in text):
        raise InvalidRequest(f"not a {algorithm} digest: expected {length} hex digits")
    return text


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``root`` (also resolved)."""
    try:
        return path.resolve(strict=False).is_relative_to(root.resolve(strict=False))
    except (OSError, RuntimeError):  # symlink loops
        return False


def check_inside(root: Path, path: Path) -> Path:
    """``path`` if it stays inside ``root`` after resolving symlinks, else a 400."""
    if not inside(root, path):
        raise InvalidRequest(f"{path.name!r} points outside the models dir")
    return path
