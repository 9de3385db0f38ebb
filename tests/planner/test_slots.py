"""Slots planned per load: more for a small model on a roomy machine, fewer under a tight
budget, the setting's when set; the daemon's load config carries the plan's count."""

from __future__ import annotations

from dataclasses import replace

from llamahomed.core.resources import simulated_machine
from llamahomed.core.settings import Settings
from llamahomed.planner import Candidate, PlanRequest, llama_shape, plan
from llamahomed.planner.choose import SLOT_MIN_CTX, slot_counts
from llamahomed.planner.estimate import LoadParams, estimate

GiB, MiB = 2**30, 2**20
SMALL = [Candidate("llama-1B:Q4_K_M", "Q4_K_M", 0, llama_shape("1B", "Q4_K_M"))]
AUTO = PlanRequest(n_ctx=8192, n_ctx_explicit=True, n_seq=None)


def slots(machine_ram: int, req: PlanRequest = AUTO) -> int | None:
    result = plan(SMALL, simulated_machine(ram=machine_ram), req)
    return result.choice.params.n_seq if result.choice else None


def test_a_small_model_on_a_roomy_cpu_machine_gets_32_slots() -> None:
    result = plan(SMALL, simulated_machine(ram=64 * GiB), AUTO)
    assert result.choice is not None and result.choice.params.n_seq == 32
    assert any(r.startswith("n_slots 32:") for r in result.reasons)


def test_the_fair_share_of_the_shared_context_caps_the_slots() -> None:
    """n_ctx is one KV pool: above 8, each slot keeps at least SLOT_MIN_CTX cells of it."""
    assert slots(64 * GiB, replace(AUTO, n_ctx=4096)) == 4096 // SLOT_MIN_CTX == 16
    assert slots(64 * GiB, replace(AUTO, n_ctx=2048)) == 8
    assert slots(64 * GiB, replace(AUTO, n_ctx=256)) == 8  # never fewer than 8 for that


def _needs(n_seq: int) -> int:
    shape = SMALL[0].shape
    assert shape is not None
    return estimate(shape, LoadParams(n_ctx=8192, n_seq=n_seq)).total


def test_a_tight_budget_gets_fewer_slots_than_a_roomy_one() -> None:
    reserve = PlanRequest().ram_reserve
    between = (_needs(8) + _needs(32)) // 2  # fits 8 slots' buffers, not 32's
    assert _needs(8) < between < _needs(32)
    tight = slots(between + reserve)
    assert tight is not None and tight < 32
    assert slots(64 * GiB) == 32


def test_under_a_very_tight_budget_slots_drop_before_the_context() -> None:
    reserve = PlanRequest().ram_reserve
    just = _needs(2) + reserve
    result = plan(SMALL, simulated_machine(ram=just), AUTO)
    assert result.choice is not None
    assert result.choice.params.n_ctx == 8192 and result.choice.params.n_seq <= 2


def test_an_explicit_slot_setting_wins() -> None:
    assert slot_counts(replace(AUTO, n_seq=3), 8192) == (3,)
    assert slots(64 * GiB, replace(AUTO, n_seq=3)) == 3
    settings = Settings(system_settings={"n_slots": 5})
    assert PlanRequest.from_settings(settings).n_seq == 5
    assert PlanRequest.from_settings(Settings()).n_seq is None
    sequential = Settings(system_settings={"engine": "sequential"})
    assert PlanRequest.from_settings(sequential).n_seq == 1


def test_more_slots_never_cost_gpu_layers() -> None:
    """On a GPU that the model fills, extra slots are only taken where the same placement
    still fits."""
    machine = simulated_machine(ram=64 * GiB, vram=1 * GiB)
    base = plan(SMALL, machine, replace(AUTO, n_seq=8))
    auto = plan(SMALL, machine, AUTO)
    assert base.choice is not None and auto.choice is not None
    assert auto.choice.params.n_gpu_layers == base.choice.params.n_gpu_layers
    assert auto.choice.candidate.name == base.choice.candidate.name
    assert auto.choice.params.n_seq >= 8
