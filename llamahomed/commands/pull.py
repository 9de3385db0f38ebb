"""``llamahomed pull <catalog id | URL>``: download a model into the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamahomed.core.settings import Settings, format_size

if TYPE_CHECKING:
    from llamahomed.registry.catalog import CatalogModel, CatalogVariant
    from llamahomed.registry.pull import PullProgress


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "pull", parents=[common], help="download a model (catalog id or URL) into the store",
        description="Download a GGUF: resumable, sha256-verified, moved into the store only when "
                    "complete. A catalog id pulls the variant that fits this machine.")
    parser.add_argument("name", help="catalog id or alias (llama3.2-1b, llama3.2-1b:q8_0) or an "
                                     "http(s) URL of a .gguf file")
    parser.add_argument("--variant", metavar="QUANT", help="catalog variant to pull, e.g. Q4_K_M")
    parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file (for URLs)")
    parser.add_argument("--name", dest="file_name", metavar="FILE.gguf",
                        help="file name in the store (default: from the catalog or the URL)")
    parser.add_argument("--catalog", type=Path, help="catalog TOML to use instead of the built-in one")
    parser.add_argument("--retries", type=int, default=3,
                        help="times an interrupted transfer is resumed before giving up (default 3)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llamahomed.commands._progress import ProgressLine
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.policy import PullPolicy
    from llamahomed.registry.pull import (
        choose_by_plan,
        pull,
        resolve_source,
        variant_size,
    )
    from llamahomed.registry.store import ModelRegistry

    catalog = Catalog.load(args.catalog)
    err = sys.stderr

    def chooser(model: CatalogModel, variants: Sequence[CatalogVariant]) -> CatalogVariant:
        chosen = choose_by_plan(settings)(model, variants)
        size = variant_size(model, chosen)
        print(f"{model.id}: pulling {chosen.quantization} ({format_size(size or 0)}), the variant "
              "the load planner picks for this machine (--variant picks another)", file=err)
        return chosen

    source = resolve_source(args.name, catalog, variant=args.variant, sha256=args.sha256,
                            file_name=args.file_name, chooser=chooser)
    target = settings.models_path / source.file
    if target.exists():
        print(f"{source.file} is already in the store ({target})")
        return 0
    policy = PullPolicy.from_settings(settings, catalog)
    policy.check_url(source.url)
    if not source.sha256:
        print(f"warning: no sha256 is known for {source.file}; it cannot be verified "
              "(pass --sha256 to verify it)", file=err)
    bar = ProgressLine(err)
    first: list[int] = []

    def progress(event: PullProgress) -> None:
        if not first:
            first.append(event.completed)
        if event.status == "downloading":
            bar.bytes(source.file, event.completed, event.total, since=first[0])
        else:
            bar.bytes(source.file, event.completed, event.total, since=first[0], force=True)

    try:
        result = asyncio.run(pull(source, settings.models_path, progress=progress,
                                  retries=max(args.retries, 0), policy=policy))
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; `llamahomed pull {args.name}` resumes the download", file=err)
        raise
    finally:
        bar.close()
    if result.already_present:
        print(f"{result.path.name} is already in the store ({result.path})")
        return 0
    entry = ModelRegistry(settings.models_path, catalog).resolve(result.path.stem)
    check = "verified" if result.verified else "NOT verified: no expected digest"
    resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
    print(f"pulled {result.path.name} as {entry.variant_id} "
          f"(sha256 {result.sha256}, {check}{resumed})")
    return 0
