"""``pull``: which GGUF to download for a catalog id or URL, then the download itself.

Which catalog variant to pull is a ``VariantChooser``'s call: the CLI and the API use
``choose_by_plan`` (the variant the load planner would load here); ``choose_by_ram``, the best
quality whose file fits in the available RAM, is the fallback for variants of unknown size. The transfer
(resumable, sha256-verified, atomic) is ``llamahomed.registry.download``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import psutil
import structlog

from llamahomed.core.errors import InvalidRequest, ModelNotFound, StartupError
from llamahomed.registry.catalog import Catalog, CatalogModel, CatalogVariant
from llamahomed.registry.download import PullProgress, PullResult, PullSource, download
from llamahomed.registry.quantize import QUANT_TYPES, quality_rank

if TYPE_CHECKING:
    from llamahomed.core.resources import Machine
    from llamahomed.core.settings import Settings

__all__ = [
    "PullProgress", "PullResult", "PullSource", "VariantChooser", "choose_by_plan", "choose_by_ram", "download", "pull",
    "resolve_source", "variant_size",
]

log = structlog.get_logger(__name__)

RAM_HEADROOM = 1.1  # a model needs its weights plus KV cache and buffers: keep 10% spare
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,250}$")
_PARAMS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.IGNORECASE)
_PARAM_UNITS = {"k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}

VariantChooser = Callable[[CatalogModel, Sequence[CatalogVariant]], CatalogVariant]


def parameter_count(label: str | None) -> int | None:
    """``"70B"`` -> 70e9, ``"270M"`` -> 270e6; None when the label is not a count."""
    match = _PARAMS_RE.match(label or "")
    if not match:
        return None
    return int(float(match.group(1)) * _PARAM_UNITS[match.group(2).lower()])


def variant_size(model: CatalogModel, variant: CatalogVariant) -> int | None:
    """The catalog's byte size, else an estimate.

    The estimate scales a sibling variant's known size by the ratio of bits per weight (it
    carries the real parameter count, which labels like "1B" round), else it multiplies the
    parameter label by the type's bits per weight.
    """
    if variant.size:
        return variant.size
    qtype = QUANT_TYPES.get(variant.quantization.upper())
    if qtype is None:
        return None
    for sibling in model.variants:
        known = QUANT_TYPES.get(sibling.quantization.upper())
        if sibling.size and known is not None:
            return int(sibling.size * qtype.bpw / known.bpw)
    params = parameter_count(model.parameters)
    return None if params is None else int(params * qtype.bpw / 8)


def choose_by_ram(model: CatalogModel, variants: Sequence[CatalogVariant],
                  available: int | None = None) -> CatalogVariant:
    """The best-quality variant whose file (plus 10%) fits in the available RAM.

    The default ``VariantChooser`` until the load planner takes over this choice.
    """
    if available is None:
        available = int(psutil.virtual_memory().available)
    ranked = sorted(variants, key=lambda v: quality_rank(v.quantization))
    sizes = {v.file: variant_size(model, v) for v in ranked}
    for variant in ranked:
        size = sizes[variant.file]
        if size is not None and size * RAM_HEADROOM <= available:
            return variant
    known = {v.quantization: sizes[v.file] for v in ranked}
    listing = ", ".join(f"{q} {s if s is not None else '?'}" for q, s in known.items())
    raise InvalidRequest(
        f"no variant of {model.id} fits in the {available} bytes of RAM available here "
        f"(sizes: {listing}); "
        "pass --variant to pull one anyway",
        details={"model": model.id, "available_bytes": available, "variants": known})


def choose_by_plan(settings: Settings, machine: Machine | None = None) -> VariantChooser:
    """A ``VariantChooser`` that asks the load planner: the variant it would load on this
    machine (or ``machine``), with today's settings: weights, KV cache and buffers counted, GPUs
    included. Variants whose size is unknown are left out."""
    from llamahomed.core.resources import read_machine
    from llamahomed.planner import Candidate, PlanRequest, plan

    def choose(model: CatalogModel, variants: Sequence[CatalogVariant]) -> CatalogVariant:
        sized = [(v, variant_size(model, v)) for v in variants]
        candidates = [Candidate(model.id, v.quantization, size, ref=v) for v, size in sized if size]
        if not candidates:
            return choose_by_ram(model, variants)
        result = plan(candidates, machine or read_machine(), PlanRequest.from_settings(settings))
        if result.choice is None:
            raise InvalidRequest(f"{model.id}: {result.refusal}; pass --variant to pull one anyway",
                                 details={"model": model.id, **result.details})
        chosen: CatalogVariant = result.choice.candidate.ref
        return chosen

    return choose


def resolve_source(name: str, catalog: Catalog, *, variant: str | None = None,
                   sha256: str | None = None, file_name: str | None = None,
                   chooser: VariantChooser = choose_by_ram) -> PullSource:
    """What ``llamahomed pull NAME`` means: an http(s) URL, or a catalog id / alias.

    A catalog name may carry the variant (``llama3.2-1b:q8_0``); ``variant`` overrides it, and
    without either the ``chooser`` picks one.
    """
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _SHA256_RE.match(sha256):
            raise InvalidRequest(f"--sha256 must be 64 hex digits, not {sha256!r}")
    if re.match(r"^[a-z][a-z0-9+.-]*://", name, re.IGNORECASE):
        return _url_source(name, sha256, file_name)
    model, wanted = _catalog_model(name, catalog)
    wanted = variant or wanted
    candidates = [v for v in model.variants if v.url]
    if not candidates:
        raise ModelNotFound(f"catalog model {model.id!r} has no downloadable variant")
    if wanted:
        chosen = next((v for v in candidates if v.quantization.lower() == wanted.lower()), None)
        if chosen is None:
            raise InvalidRequest(
                f"{model.id} has no variant {wanted!r}; it has "
                f"{', '.join(v.quantization for v in candidates)}",
                details={"model": model.id, "variants": [v.quantization for v in candidates]})
    else:
        chosen = chooser(model, candidates)
    if sha256 and chosen.sha256 and sha256 != chosen.sha256:
        raise InvalidRequest(f"--sha256 disagrees with the catalog's digest for {chosen.file}")
    return PullSource(url=chosen.url, file=file_name or chosen.file, sha256=sha256 or chosen.sha256,
                      size=chosen.size, model=model, variant=chosen)


def _url_source(url: str, sha256: str | None, file_name: str | None) -> PullSource:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"only http:// and https:// URLs can be pulled, not {url!r}")
    name = file_name or unquote(parts.path.rsplit("/", 1)[-1])
    if name and not name.lower().endswith(".gguf"):
        name += ".gguf"
    if not _FILE_RE.match(name):
        raise InvalidRequest(f"cannot name a model file {name!r} after this URL; pass --name FILE.gguf",
                             details={"url": url})
    return PullSource(url=url, file=name, sha256=sha256 or "")


def _catalog_model(name: str, catalog: Catalog) -> tuple[CatalogModel, str | None]:
    model = catalog.lookup(name)
    if model is not None:
        return model, None
    if ":" in name:
        base, quant = name.rsplit(":", 1)
        model = catalog.lookup(base)
        if model is not None:
            return model, quant
    raise ModelNotFound(
        f"{name!r} is neither a URL nor a model in the catalog; known: {', '.join(sorted(catalog.models))}",
        details={"model": name, "catalog": sorted(catalog.models)})


async def pull(source: PullSource, models_dir: Path, **options: Any) -> PullResult:
    """``download``, except that an embedded model comes from its installed package."""
    variant = source.variant
    if variant is not None and variant.embedded and variant.package and source.file == variant.file:
        from llamahomed.registry.default_model import install_embedded

        target = models_dir / source.file
        if target.exists():
            return PullResult(target, None, False, 0, already_present=True)
        try:
            path = await asyncio.to_thread(install_embedded, variant.package, models_dir)
        except StartupError:
            log.info("pull_embedded_unavailable", package=variant.package)
        else:  # the package checked the sha256 of what it assembled
            return PullResult(path, source.sha256, bool(source.sha256), 0)
    return await download(source, models_dir, **options)
