"""The planner over a table of machines x Llama shapes (1B, 8B, 70B from header data) x variants.

Each plan is checked independently of the planner's own search: the chosen option must fit the
machine, and a brute force over every variant and every GPU layer count must find no
better-quality option in the same tier (entirely on the GPU, or else partial/CPU).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llamahomed.planner import Candidate, PlanRequest, choose_variant, estimate, llama_shape, plan
from llamahomed.planner.choose import Option, Plan
from llamahomed.planner.estimate import LoadParams
from llamahomed.core.resources import Machine, simulated_machine

GiB = 2**30
VARIANTS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
MACHINES = {
    "cpu-8": simulated_machine(ram=8 * GiB),
    "cpu-16": simulated_machine(ram=16 * GiB),
    "cpu-64": simulated_machine(ram=64 * GiB),
    "gpu-4": simulated_machine(ram=16 * GiB, vram=4 * GiB),
    "gpu-8": simulated_machine(ram=32 * GiB, vram=8 * GiB),
    "gpu-24": simulated_machine(ram=64 * GiB, vram=24 * GiB),
    "gpu-80": simulated_machine(ram=128 * GiB, vram=80 * GiB),
    "2gpu-24": simulated_machine(ram=128 * GiB, vram=24 * GiB, gpus=2),
    "apple-16": simulated_machine(ram=16 * GiB, apple=True),
    "apple-64": simulated_machine(ram=64 * GiB, apple=True),
}
SIZES = ["1B", "8B", "70B"]
REQUEST = PlanRequest(n_ctx=8192, n_seq=4)


def candidates(size: str, variants: list[str] = VARIANTS) -> list[Candidate]:
    return [Candidate(f"llama-{size}:{q}", q, 0, llama_shape(size, q)) for q in variants]


def fits(machine: Machine, option: Option, req: PlanRequest = REQUEST) -> bool:
    """The machine's limits, checked here rather than trusted from the planner."""
    est = option.estimate
    ram = machine.ram_available - req.ram_reserve
    if machine.apple:
        return est.total <= ram and est.vram <= machine.gpus[0].free - req.vram_reserve
    gpus_ok = all(part.total <= gpu.free - req.vram_reserve
                  for part, gpu in zip(est.gpus, machine.gpus))
    return gpus_ok and len(est.gpus) <= len(machine.gpus) and est.cpu.total <= ram


def brute_force(machine: Machine, cands: list[Candidate], n_ctx: int) -> tuple[set[str], set[str]]:
    """Variants that fit entirely on the GPU, and variants that fit some other way."""
    backend = machine.gpus[0].backend if machine.gpus else "cpu"
    fractions = tuple(float(g.free) for g in machine.gpus) or (1.0,)
    full, other = set(), set()
    for c in cands:
        assert c.shape is not None
        for kv in ("f16", "q8_0"):
            for ngl in range(0, c.shape.n_layer + 2 if machine.gpus else 1):
                p = LoadParams(n_ctx=n_ctx, n_gpu_layers=ngl, n_seq=REQUEST.n_seq, kv_type=kv)
                est = estimate(c.shape, p, backend=backend, gpu_fractions=fractions)
                option = Option(c, p, "gpu" if ngl > c.shape.n_layer else "partial", est, True)
                if fits(machine, option):
                    (full if ngl > c.shape.n_layer else other).add(c.quantization)
    return full, other


def bpw(quant: str, size: str) -> float:
    return llama_shape(size, quant).bits_per_weight


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("machine_name", sorted(MACHINES))
def test_no_plan_exceeds_the_machine_and_quality_is_maximal(machine_name: str, size: str) -> None:
    machine = MACHINES[machine_name]
    cands = candidates(size)
    result = plan(cands, machine, REQUEST)
    if result.choice is None:
        assert result.refusal and "no variant fits" in result.refusal
        smallest = min(result.options, key=lambda o: o.estimate.total)
        assert not any(fits(machine, o) for o in result.options)
        assert f"{smallest.estimate.total / GiB:.2f} GiB" in result.refusal
        return
    choice = result.choice
    assert fits(machine, choice), result.to_dict()
    assert choice.estimate.total > choice.candidate.shape.weight_bytes  # type: ignore[union-attr]
    full, other = brute_force(machine, cands, choice.params.n_ctx)
    if choice.placement == "gpu":
        assert choice.candidate.quantization == max(full, key=lambda q: bpw(q, size))
    else:
        assert not full, f"{full} fit entirely on the GPU but the plan chose {choice.placement}"
        assert choice.candidate.quantization == max(other, key=lambda q: bpw(q, size))
    assert result.reasons


@pytest.mark.parametrize(("machine_name", "size", "expected"), [
    # 8 GiB - 1 GiB reserve: Q6_K's 6.1 GiB + 1 GiB KV (8k x 32 layers x 2 KiB x 2) does not fit
    ("cpu-8", "8B", ("Q5_K_M", "cpu")),
    ("gpu-8", "8B", ("Q6_K", "gpu")),      # 6.1 GiB weights + 1 GiB KV on 7.5 GiB usable
    ("gpu-24", "8B", ("F16", "gpu")),      # 15 GiB weights (the embedding stays in RAM)
    ("gpu-80", "70B", ("Q8_0", "gpu")),    # 69.8 GB + 2.5 GiB KV on 79.5 GiB usable
    ("2gpu-24", "70B", ("Q4_K_M", "gpu")), # 39.6 GiB split over 2 x 23.5 GiB
    ("gpu-24", "70B", ("Q8_0", "partial")),  # quality policy: best weights, 25 layers on the GPU
    ("apple-64", "70B", ("Q4_K_M", "gpu")),  # Metal may use 3/4 of 64 GiB = 48 GiB
    ("apple-16", "8B", ("Q8_0", "gpu")),     # 2/3 of 16 GiB = 10.7 GiB for the GPU
])
def test_known_choices(machine_name: str, size: str, expected: tuple[str, str]) -> None:
    """Spot checks that a person can verify with a calculator (docs/Planner.md)."""
    choice = plan(candidates(size), MACHINES[machine_name], REQUEST).choice
    assert choice is not None
    assert (choice.candidate.quantization, choice.placement) == expected


def test_seventy_b_does_not_fit_eight_gib_and_the_refusal_says_what_would() -> None:
    result = plan(candidates("70B"), MACHINES["cpu-8"], REQUEST)
    assert result.choice is None
    assert "Q2_K" in result.refusal and "smaller" in result.refusal
    assert result.details["needed_bytes"] > result.details["ram_budget_bytes"]


def test_context_is_never_above_the_trained_context() -> None:
    shape = dataclasses.replace(llama_shape("1B", "Q4_K_M"), context_train=2048)
    result = plan([Candidate("small", "Q4_K_M", 0, shape)], MACHINES["cpu-16"],
                  PlanRequest(n_ctx=32768))
    assert result.choice is not None and result.choice.params.n_ctx == 2048
    assert any("trained for 2048" in r for r in result.reasons)


def test_without_an_explicit_context_a_smaller_one_is_tried_before_refusing() -> None:
    cands = candidates("8B", ["Q4_K_M"])
    machine = simulated_machine(ram=7 * GiB)
    big = PlanRequest(n_ctx=131072, n_seq=1)
    result = plan(cands, machine, big)
    assert result.choice is not None and result.choice.params.n_ctx < 131072
    assert any("nothing fits at n_ctx 131072" in r for r in result.reasons)
    explicit = plan(cands, machine, dataclasses.replace(big, n_ctx_explicit=True))
    assert explicit.choice is None
    shorter = explicit.details["fits_with_n_ctx"]
    assert f"It would fit with n_ctx {shorter}" in explicit.refusal
    assert plan(cands, machine, dataclasses.replace(big, n_ctx=shorter, n_ctx_explicit=True)).choice


def test_speed_policy_prefers_more_of_the_model_on_the_gpu() -> None:
    cands = candidates("70B")
    machine = MACHINES["gpu-24"]
    quality = plan(cands, machine, REQUEST).choice
    speed = plan(cands, machine, dataclasses.replace(REQUEST, policy="speed")).choice
    assert quality is not None and speed is not None
    assert speed.seconds_per_token() < quality.seconds_per_token()
    assert speed.candidate.shape.bits_per_weight < quality.candidate.shape.bits_per_weight  # type: ignore[union-attr]


def test_explicit_settings_win_and_are_named_in_the_reasons() -> None:
    req = dataclasses.replace(REQUEST, n_gpu_layers=4, kv_type="q8_0", n_threads=3)
    result = plan(candidates("8B", ["Q4_K_M"]), MACHINES["gpu-24"], req)
    assert result.choice is not None
    assert result.choice.params.n_gpu_layers == 4 and result.choice.params.kv_type == "q8_0"
    assert result.n_threads == 3
    text = " ".join(result.reasons)
    for name in ("n_gpu_layers 4", "KV cache q8_0", "n_threads 3"):
        assert f"{name}: set in the settings" in text


def test_a_quantized_kv_cache_is_used_only_when_it_buys_a_full_offload() -> None:
    shape = llama_shape("8B", "Q4_K_M")
    cands = [Candidate("q4", "Q4_K_M", 0, shape)]
    roomy = plan(cands, MACHINES["gpu-24"], REQUEST).choice
    assert roomy is not None and roomy.params.kv_type == "f16"
    # Find a GPU where only the smaller KV cache lets everything on.
    req = dataclasses.replace(REQUEST, n_ctx=32768, n_ctx_explicit=True)
    f16 = estimate(shape, LoadParams(n_ctx=32768, n_gpu_layers=33, n_seq=4), backend="cuda")
    q8 = estimate(shape, LoadParams(n_ctx=32768, n_gpu_layers=33, n_seq=4, kv_type="q8_0"),
                  backend="cuda")
    vram = (f16.vram + q8.vram) // 2 + req.vram_reserve
    tight = plan(cands, simulated_machine(ram=64 * GiB, vram=vram), req).choice
    assert tight is not None and tight.placement == "gpu" and tight.params.kv_type == "q8_0"


def test_two_gpus_share_the_layers() -> None:
    result = plan(candidates("70B", ["Q3_K_M"]), MACHINES["2gpu-24"], REQUEST)
    assert result.choice is not None and len(result.choice.estimate.gpus) == 2
    a, b = result.choice.estimate.gpus
    assert a.weights > 0 and b.weights > 0


def test_apple_plans_count_gpu_and_cpu_against_one_pool() -> None:
    machine = MACHINES["apple-16"]
    result = plan(candidates("8B"), machine, REQUEST)
    assert result.choice is not None and result.choice.estimate.gpus
    assert result.choice.estimate.total <= machine.ram_total - REQUEST.ram_reserve
    assert result.choice.estimate.vram <= machine.gpus[0].total
    assert any("unified memory" in r for r in result.reasons)


def test_choose_variant_returns_the_candidate_with_its_reference() -> None:
    marker = object()
    cands = [Candidate("a", "Q4_K_M", 0, llama_shape("8B", "Q4_K_M"), ref=marker),
             Candidate("b", "F16", 0, llama_shape("8B", "F16"), ref="f16")]
    chosen = choose_variant(cands, MACHINES["gpu-8"], REQUEST)
    assert chosen is not None and chosen.ref is marker
    assert choose_variant(cands, MACHINES["gpu-80"], REQUEST).ref == "f16"  # type: ignore[union-attr]
    assert choose_variant(candidates("70B"), MACHINES["cpu-8"], REQUEST) is None


def test_catalog_variants_without_a_header_are_sized_from_a_sibling_or_guessed() -> None:
    on_disk = Candidate("m:q4_k_m", "Q4_K_M", 0, llama_shape("8B", "Q4_K_M"))
    q8_size = llama_shape("8B", "Q8_0").weight_bytes
    catalog_only = Candidate("m:q8_0", "Q8_0", q8_size, None, ref="catalog")
    result = plan([on_disk, catalog_only], MACHINES["gpu-24"], REQUEST)
    assert result.choice is not None and result.choice.candidate.ref == "catalog"
    assert any("scaled from m:q4_k_m" in r for r in result.reasons)
    guessed = plan([catalog_only], MACHINES["gpu-24"], REQUEST)
    assert guessed.choice is not None
    assert guessed.choice.candidate.shape.weight_bytes == pytest.approx(q8_size, rel=0.01)  # type: ignore[union-attr]
    assert any("guessed from its size" in r for r in guessed.reasons)


def test_plan_to_dict_is_json_shaped() -> None:
    import json

    result: Plan = plan(candidates("1B", ["Q4_K_M", "F16"]), MACHINES["gpu-8"], REQUEST)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["fits"] is True and data["variant"] == "llama-1B:F16"
    assert data["options"] and data["machine"]["simulated"] is True


def test_a_sliding_window_model_drops_its_full_size_swa_cache_before_its_context(
        gemma_file: Path) -> None:
    from llamahomed.planner import ModelShape
    from llamahomed.registry.gguf_meta import read_gguf_info

    gemma = Candidate("gemma", "Q4_K_M", 0, ModelShape.from_info(read_gguf_info(gemma_file)))
    req = PlanRequest(n_ctx=32768, n_seq=8)
    params = LoadParams(n_ctx=32768, n_seq=8)
    full = estimate(gemma.shape, params).total  # type: ignore[arg-type]
    window = estimate(gemma.shape, dataclasses.replace(params, swa_full=False)).total  # type: ignore[arg-type]
    assert window < full
    machine = simulated_machine(ram=(full + window) // 2 + req.ram_reserve)
    result = plan([gemma], machine, req)
    assert result.choice is not None
    assert result.choice.params.n_ctx == 32768 and result.choice.params.swa_full is False
    assert any("keep only their window" in r for r in result.reasons)
    roomy = plan([gemma], simulated_machine(ram=full + req.ram_reserve + 2**20), req).choice
    assert roomy is not None and roomy.params.swa_full is True
