"""Variants: files of one model at different quantizations share a model id."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamahomed.registry.catalog import Catalog
from llamahomed.registry.store import ModelRegistry, model_id_for
from tests.fixtures.tiny_gguf import write_tiny_llama


@pytest.mark.parametrize(("name", "expected"), [
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "llama-3.2-1b-instruct"),
    ("foo-q8_0.gguf", "foo"), ("foo.F16.gguf", "foo"), ("mistral-7b-IQ4_XS.gguf", "mistral-7b"),
    ("tiny-llama.gguf", "tiny-llama"), ("qwen2.5-0.5b.gguf", "qwen2.5-0.5b"),
])
def test_a_file_name_without_its_quantization_is_the_model_id(name: str, expected: str) -> None:
    assert model_id_for(Path(name).stem) == expected


def test_files_whose_headers_agree_but_quantization_differs_are_one_model(tmp_path: Path) -> None:
    make = write_tiny_llama
    make(tmp_path / "my-model.gguf", name="my-model")                       # F32
    make(tmp_path / "downloaded-copy.gguf", name="my-model", ftype="q8_0")  # same model, Q8_0
    make(tmp_path / "other.gguf", name="other")                             # another model
    groups = ModelRegistry(tmp_path, Catalog([])).models()
    assert sorted(groups) == ["my-model", "other"]  # the id that matches general.name
    variants = groups["my-model"]
    assert sorted(e.quantization for e in variants) == ["F32", "Q8_0"]
    assert {e.variant_id for e in variants} == {"my-model:f32", "my-model:q8_0"}


def test_two_copies_of_the_same_quantization_stay_apart(tmp_path: Path) -> None:
    make = write_tiny_llama
    make(tmp_path / "a.gguf", name="same")
    make(tmp_path / "b.gguf", name="same")
    assert sorted(ModelRegistry(tmp_path, Catalog([])).models()) == ["a", "b"]
