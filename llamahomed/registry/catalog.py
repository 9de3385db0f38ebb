"""The catalog of known models (``models/catalog.toml``): ids, aliases, variants, digests."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llamahomed.registry.names import check_digest, check_file_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class CatalogVariant:
    quantization: str
    file: str
    url: str
    size: int | None = None
    sha256: str = ""
    embedded: bool = False
    package: str | None = None


@dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    family: str
    version: str | None
    parameters: str | None
    architecture: str | None
    context_length: int | None
    aliases: tuple[str, ...]
    source: str | None
    variants: tuple[CatalogVariant, ...]

    def how_to_get(self) -> str:
        """The sentence a ``model_not_found`` error gives for a model that is not on disk."""
        variant = next((v for v in self.variants if v.quantization == "Q4_K_M"),
                       self.variants[0] if self.variants else None)
        if variant is None:
            return f"model {self.id!r} is in the catalog but has no downloadable variant"
        return (f"model {self.id!r} ({self.name}) is in the catalog but not on disk: run "
                f"`llamahomed pull {self.id}`, or download {variant.url} and run "
                "`llamahomed models import <file>`")


class Catalog:
    """Known models by id, alias and variant file name; ``hosts``: where its files' URLs
    redirect to (the file's top-level ``download_hosts``, e.g. a CDN's ``.hf.co``)."""

    def __init__(self, models: list[CatalogModel], hosts: tuple[str, ...] = ()) -> None:
        self.models = {m.id: m for m in models}
        self.hosts = hosts
        self._names: dict[str, CatalogModel] = {}
        self._files: dict[str, tuple[CatalogModel, CatalogVariant]] = {}
        for model in models:
            for name in (model.id, *model.aliases):
                self._names[name.lower()] = model
            for variant in model.variants:
                self._files[variant.file.lower()] = (model, variant)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        if path is None:
            text = resources.files("llamahomed.catalog_data").joinpath("catalog.toml").read_bytes()
        else:
            text = path.read_bytes()
        data = tomllib.loads(text.decode())
        hosts = tuple(str(h).strip().lower() for h in data.get("download_hosts", ()))
        return cls([_model(entry) for entry in data.get("models", [])], hosts)

    def lookup(self, name: str) -> CatalogModel | None:
        """A catalog model by id or alias (case-insensitive), e.g. ``llama3.3``."""
        return self._names.get(name.lower())

    def by_file(self, file_name: str) -> tuple[CatalogModel, CatalogVariant] | None:
        return self._files.get(file_name.lower())

    def download_hosts(self) -> set[str]:
        """The hosts of the variants' URLs plus ``hosts``: what a pull may fetch by default."""
        found = {(urlsplit(v.url).hostname or "").lower() for m in self.models.values()
                 for v in m.variants if v.url}
        return (found | set(self.hosts)) - {""}

    def embedded(self) -> tuple[CatalogModel, CatalogVariant] | None:
        for model in self.models.values():
            for variant in model.variants:
                if variant.embedded:
                    return model, variant
        return None


def _model(entry: dict[str, Any]) -> CatalogModel:
    return CatalogModel(
        id=entry["id"], name=entry.get("name", entry["id"]), family=entry.get("family", entry["id"]),
        version=entry.get("version"), parameters=entry.get("parameters"),
        architecture=entry.get("architecture"), context_length=entry.get("context_length"),
        aliases=tuple(entry.get("aliases", ())), source=entry.get("source"),
        variants=tuple(CatalogVariant(
            quantization=v["quantization"], file=check_file_name(v["file"]), url=v.get("url", ""),
            size=v.get("size"), sha256=check_digest(v["sha256"]) if v.get("sha256") else "",
            embedded=bool(v.get("embedded", False)),
            package=v.get("package")) for v in entry.get("variants", ())),
    )
