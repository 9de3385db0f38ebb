"""The model store: GGUF files in the models dir, read from their headers, named by the catalog."""

from __future__ import annotations

import os
import re
import shutil
import stat as stat_mod
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from llamahomed.core.errors import InvalidRequest, ModelNotFound, NotFound
from llamahomed.registry.catalog import Catalog, CatalogModel, CatalogVariant
from llamahomed.registry.gguf_meta import GGUFError, GGUFInfo, read_model_info
from llamahomed.registry.names import check_file_name, check_inside, check_model_id

log = structlog.get_logger(__name__)

# Lower is preferred when a model id has several variants on disk and nothing else decides.
_QUANT_PREFERENCE = ["Q4_K_M", "Q5_K_M", "Q4_K_S", "Q6_K", "Q8_0", "Q5_K_S", "Q4_0", "Q3_K_M",
                     "Q3_K_L", "Q2_K", "BF16", "F16", "F32"]


def slug(text: str) -> str:
    """A model id from free text: lowercase, ``[a-z0-9._-]``, no leading/trailing separators."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"


_QUANT_SUFFIX = re.compile(
    r"[-_.](f32|f16|bf16|q[2-8]_[01k](_[sml])?|q[2-6]_k|iq[1-4]_(xxs|xs|s|m|nl))$", re.IGNORECASE)


def model_id_for(stem: str) -> str:
    """The model id of a file not named by the catalog: its stem less a quantization suffix.

    ``tiny-llama.gguf`` and ``tiny-llama-Q8_0.gguf`` (what ``llamahomed quantize`` writes) are
    both ``tiny-llama``: two variants of one model.
    """
    return slug(_QUANT_SUFFIX.sub("", stem) or stem)


@dataclass(frozen=True)
class ModelEntry:
    """One GGUF file in the store."""

    id: str
    path: Path
    info: GGUFInfo
    catalog: CatalogModel | None = None
    variant: CatalogVariant | None = None

    @property
    def quantization(self) -> str:
        return self.info.quantization

    @property
    def variant_id(self) -> str:
        return f"{self.id}:{self.quantization.lower()}"

    @property
    def name(self) -> str:
        if self.catalog:
            return self.catalog.name
        return self.info.name or self.path.stem

    @property
    def version(self) -> str | None:
        if self.catalog and self.catalog.version:
            return self.catalog.version
        return self.info.version_label

    @property
    def parameters(self) -> str:
        if self.catalog and self.catalog.parameters:
            return self.catalog.parameters
        return self.info.parameters_label

    @property
    def size(self) -> int:
        return self.info.file_size

    @property
    def capabilities(self) -> list[str]:
        caps = ["text-generation"]
        if self.info.has_chat_template:
            caps.append("chat")
        if self.info.pooling_type:
            caps.append("embeddings")
        return caps


def _preference(entry: ModelEntry) -> tuple[int, str]:
    quant = entry.quantization.upper()
    rank = _QUANT_PREFERENCE.index(quant) if quant in _QUANT_PREFERENCE else len(_QUANT_PREFERENCE)
    return rank, entry.path.name


def _signature(entry: ModelEntry) -> tuple[object, ...]:
    info = entry.info
    return (info.architecture, info.name, info.block_count, info.embedding_length, info.n_params)


class ModelRegistry:
    """Discovers ``*.gguf`` files; headers are cached by (size, mtime) so scans stay cheap."""

    def __init__(self, models_dir: Path, catalog: Catalog) -> None:
        self.models_dir = models_dir
        self.catalog = catalog
        self._cache: dict[Path, tuple[tuple[int, int], ModelEntry]] = {}
        self.invalid: dict[Path, str] = {}
        self._bad: dict[Path, tuple[tuple[int, int], str]] = {}

    def scan(self) -> list[ModelEntry]:
        """Every valid model file in the store; malformed ones land in ``invalid`` with why."""
        entries: list[ModelEntry] = []
        seen: set[Path] = set()
        self.invalid = {}
        root = self.models_dir.resolve() if self.models_dir.exists() else self.models_dir
        for path in sorted(self.models_dir.glob("*.gguf")) if self.models_dir.is_dir() else []:
            if path.name.startswith("."):
                continue
            real = path.resolve()
            if not real.is_relative_to(root):
                self.invalid[path] = "symlink points outside the models dir"
                continue
            try:
                stat = real.stat()
            except OSError as exc:  # its strerror only: str(exc) would carry the path
                self.invalid[path] = exc.strerror or type(exc).__name__
                continue
            if not stat_mod.S_ISREG(stat.st_mode):  # a FIFO or device would block or never end
                self.invalid[path] = "not a regular file"
                continue
            key = (stat.st_size, stat.st_mtime_ns)
            seen.add(path)
            cached = self._cache.get(path)
            if cached and cached[0] == key:
                entries.append(cached[1])
                continue
            known_bad = self._bad.get(path)
            if known_bad and known_bad[0] == key:  # logged once, not on every scan
                self.invalid[path] = known_bad[1]
                continue
            try:
                entry = self._entry(path, read_model_info(real))
            except GGUFError as exc:
                self.invalid[path] = str(exc)
                self._bad[path] = (key, str(exc))
                log.warning("model_file_invalid", path=str(path), error=str(exc))
                continue
            self._cache[path] = (key, entry)
            entries.append(entry)
        for stale in set(self._cache) - seen:
            del self._cache[stale]
        for stale in set(self._bad) - set(self.invalid):
            del self._bad[stale]
        return entries

    def _entry(self, path: Path, info: GGUFInfo) -> ModelEntry:
        match = self.catalog.by_file(path.name)
        if match:
            return ModelEntry(match[0].id, path, info, match[0], match[1])
        model_id = model_id_for(path.stem)
        known = self.catalog.models.get(model_id)
        return ModelEntry(model_id, path, info, known) if known else ModelEntry(model_id, path, info)

    def models(self) -> dict[str, list[ModelEntry]]:
        """Entries grouped by model id, each group in preference order.

        Files the catalog does not know are variants of one model when their headers agree on
        architecture, name, layer count, width and parameter count but not on quantization;
        the group takes the id that matches their ``general.name``, else the smallest.
        """
        entries = self.scan()
        by_header: dict[tuple[object, ...], list[ModelEntry]] = {}
        for entry in entries:
            if entry.catalog is None:
                by_header.setdefault(_signature(entry), []).append(entry)
        renamed: dict[Path, str] = {}
        for same in by_header.values():
            if len({e.quantization for e in same}) == len(same) > 1:
                ids, named = {e.id for e in same}, slug(same[0].info.name or "")
                group_id = named if named in ids else min(ids)
                renamed.update({e.path: group_id for e in same})
        groups: dict[str, list[ModelEntry]] = {}
        for entry in entries:
            if renamed.get(entry.path, entry.id) != entry.id:
                entry = replace(entry, id=renamed[entry.path])
            groups.setdefault(entry.id, []).append(entry)
        return {k: sorted(v, key=_preference) for k, v in sorted(groups.items())}

    def resolve(self, name: str, groups: dict[str, list[ModelEntry]] | None = None) -> ModelEntry:
        """The file a request's model name means: id, ``id:quant``, alias or file stem.

        ``groups`` is a ``models()`` result the caller already has (saves a second scan).
        """
        key = check_model_id(name).lower()
        groups = self.models() if groups is None else groups
        if key in groups:
            return self._checked(groups[key][0])
        for entries in groups.values():
            for entry in entries:
                if key in (entry.variant_id, entry.path.stem.lower(), entry.path.name.lower()):
                    return self._checked(entry)
        for path, why in self.invalid.items():
            if key in (path.stem.lower(), path.name.lower(), slug(path.stem)):
                raise ModelNotFound(f"the model file {path.name} is not usable: {why}",
                                    details={"model": name, "file": path.name, "reason": why})
        known = self.catalog.lookup(key.split(":")[0]) or self.catalog.lookup(key)
        if known is not None:
            if known.id in groups:
                return groups[known.id][0]
            raise ModelNotFound(known.how_to_get(), details={"model": name, "catalog_id": known.id})
        raise ModelNotFound(
            f"no model named {name!r}: `llamahomed models list` shows the installed ones, "
            "`llamahomed models import <file.gguf>` adds one",
            details={"model": name, "available": sorted(groups)})

    def _checked(self, entry: ModelEntry) -> ModelEntry:
        """The entry, if its file still resolves inside the models dir (symlinks followed)."""
        check_inside(self.models_dir, entry.path)
        return entry

    def import_file(self, source: Path, name: str | None = None) -> ModelEntry:
        """Check a GGUF's header, then place its bytes in the store (hard link, else a copy),
        under ``name`` (a plain ``*.gguf`` file name; default: the source's).

        A symlink is followed and its target's bytes are stored under the link's name: the store
        keeps no links of its own making, since the scan refuses a link that leads out of the
        models dir (a relative one would even point elsewhere once moved), and a store file must
        not change or vanish when something outside it does.
        """
        real = source.resolve()
        if not real.is_file():
            raise NotFound(f"no such file: {source}")
        name = name or (source.name if source.suffix == ".gguf" else f"{source.name}.gguf")
        check_file_name(name)
        try:
            info = read_model_info(real)
        except GGUFError as exc:
            raise InvalidRequest(f"{source} is not a usable GGUF file: {exc}") from exc
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / name
        if target.exists() or target.is_symlink():
            raise InvalidRequest(f"{target} already exists in the model store")
        tmp = self.models_dir / f".{name}.partial"
        try:
            try:
                os.link(real, tmp, follow_symlinks=False)  # real is no link: this links its inode
            except OSError:
                shutil.copyfile(real, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self._entry(target, info)

    def remove(self, name: str) -> list[Path]:
        """Delete a model's files (every variant for an id, one for ``id:quant``)."""
        key = name.strip().lower()
        groups = self.models()
        victims = groups.get(key) or [self.resolve(name, groups)]
        for entry in victims:
            entry.path.unlink()
        return [e.path for e in victims]
