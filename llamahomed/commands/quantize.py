"""``llamahomed quantize MODEL TYPE``: make a lower-precision variant with llama.cpp."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from llamahomed.core.settings import Settings, format_size

if TYPE_CHECKING:
    from llamahomed.registry.quantize import QuantizeProgress


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "quantize", parents=[common], help="make a smaller variant of a model with llama.cpp",
        description="Quantize a model in the store with llama.cpp's quantizer; the result is a "
                    "new variant <model id>-<TYPE>.gguf beside it.")
    parser.add_argument("model", help="model id, id:quant or file name in the store")
    parser.add_argument("type", metavar="TYPE",
                        help="target type, best quality first: F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S "
                             "Q5_1 Q5_0 Q4_K_M Q4_K_S IQ4_NL IQ4_XS Q4_1 Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K")
    parser.add_argument("--threads", type=int, help="quantizer threads (default: physical cores)")
    parser.add_argument("--allow-requantize", action="store_true",
                        help="quantize an already quantized model (loses more quality)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llamahomed.commands._progress import ProgressLine
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.quantize import estimate_size, parse_type, quantize_model
    from llamahomed.registry.store import ModelRegistry

    qtype = parse_type(args.type)
    registry = ModelRegistry(settings.models_path, Catalog.load())
    entry = registry.resolve(args.model)
    estimate = estimate_size(entry.info, qtype)
    print(f"quantizing {entry.path.name} ({entry.quantization}, {format_size(entry.size)}) to "
          f"{qtype.name} (about {format_size(estimate)})", file=sys.stderr)
    bar = ProgressLine(sys.stderr)
    label = f"{entry.id} -> {qtype.name}"

    def progress(state: QuantizeProgress) -> None:
        bar.steps(label, state.done, state.total, state.elapsed)

    try:
        path = quantize_model(entry, qtype, settings.models_path, threads=args.threads,
                              allow_requantize=args.allow_requantize, progress=progress)
    finally:
        bar.close()
    new = registry.resolve(path.stem)
    print(f"wrote {path.name} ({format_size(new.size)}) as {new.variant_id}")
    return 0
