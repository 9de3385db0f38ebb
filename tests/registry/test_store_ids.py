"""Model ids of files the catalog does not name, and of the variants ``quantize`` writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamahomed.registry.catalog import Catalog
from llamahomed.registry.quantize import parse_type, quantize_model
from llamahomed.registry.store import ModelRegistry, model_id_for


@pytest.mark.parametrize(("stem", "model_id"), [
    ("tiny-llama", "tiny-llama"), ("tiny-llama-Q8_0", "tiny-llama"),
    ("Llama-3.2-1B-Instruct-Q4_K_M", "llama-3.2-1b-instruct"), ("model.f16", "model"),
    ("model_IQ4_XS", "model"), ("mistral-7b-Q3_K_L", "mistral-7b"), ("qwen-bf16", "qwen"),
    ("Q4_K_M", "q4_k_m"),  # nothing would be left: the name stays
    ("q4-model", "q4-model"), ("model-q9_0", "model-q9_0"),
])
def test_model_id_drops_a_quantization_suffix(stem: str, model_id: str) -> None:
    assert model_id_for(stem) == model_id


def test_a_quantized_variant_of_a_catalog_model_keeps_its_catalog_id(models_dir: Path,
                                                                    tmp_path: Path) -> None:
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text('''
[[models]]
id = "tiny-cat"
name = "Tiny From The Catalog"
[[models.variants]]
quantization = "F32"
file = "tiny-llama.gguf"
url = "http://127.0.0.1:9/tiny-llama.gguf"
''')
    registry = ModelRegistry(models_dir, Catalog.load(catalog_file))
    source = registry.resolve("tiny-cat")
    path = quantize_model(source, parse_type("Q8_0"), models_dir, threads=1)
    assert path.name == "tiny-cat-Q8_0.gguf"
    variants = registry.models()["tiny-cat"]
    assert [e.quantization for e in variants] == ["Q8_0", "F32"]
    made = variants[0]
    assert made.catalog is not None and made.name == "Tiny From The Catalog"
    assert made.variant is None  # not the catalog's file: no catalog digest applies to it
