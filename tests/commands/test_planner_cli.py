"""``llamahomed plan``: prints the plan and the options weighed, for this or a simulated machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamahomed.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["plan", *argv])
    return code, capsys.readouterr().out


def test_a_simulated_two_gpu_machine_gets_a_70b_entirely_on_the_gpus(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "llama-70b", "--ram", "128GiB", "--vram", "24GiB", "--gpus", "2",
                    "--ctx", "8192", "--json")
    data = json.loads(out)
    assert code == 0 and data["fits"] is True
    assert data["placement"] == "gpu" and data["quantization"] == "Q4_K_M"
    assert len(data["memory"]["gpus"]) == 2 and data["machine"]["simulated"] is True
    assert {o["quantization"] for o in data["options"]} >= {"F16", "Q8_0", "Q4_K_M", "Q2_K"}


def test_the_text_plan_shows_reasons_and_the_options_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "llama-8b", "--ram", "16GiB", "--apple")
    assert code == 0
    assert "plan: llama-8b:q8_0 (gpu" in out and "unified memory" in out
    assert "options weighed:" in out and "llama-8b:f16" in out and "no: " in out


def test_a_model_that_fits_nowhere_exits_1_and_says_what_it_needs(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "llama-70b", "--ram", "8GiB")
    assert code == 1 and "REFUSED: no variant fits" in out and "Q2_K" in out


def test_a_model_in_the_store_is_planned_from_its_header(
        capsys: pytest.CaptureFixture[str], models_dir: Path) -> None:
    code, out = run(capsys, "--models-dir", str(models_dir), "tiny-llama", "--json")
    data = json.loads(out)
    assert code == 0 and data["variant"] == "tiny-llama:f32" and data["n_ctx"] == 256
    assert data["machine"]["simulated"] is False
    assert any("trained for 256" in r for r in data["reasons"])


def test_a_gguf_path_is_planned_without_the_store(
        capsys: pytest.CaptureFixture[str], tiny_model_file: Path) -> None:
    code, out = run(capsys, str(tiny_model_file), "--vram", "4GiB", "--ram", "8GiB")
    assert code == 0 and "tiny-llama.gguf (gpu" in out


def test_gpus_without_vram_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "llama-1b", "--gpus", "2"]) == 1
    assert "--gpus needs --vram" in capsys.readouterr().err
