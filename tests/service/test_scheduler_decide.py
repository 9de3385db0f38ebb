"""The scheduler's decision on its own, on simulated GPU machines and Llama shapes: fit
alongside, evict idle models least recently used first (only as many as needed, and never to
load a model worse than it would load without them), wait for busy ones, honour
max_loaded_models. (The decisions on real workers: test_scheduler.py.)"""

from __future__ import annotations

from dataclasses import dataclass

from llamahomed.core.resources import Machine, simulated_machine
from llamahomed.engine.handle import Held
from llamahomed.planner import Candidate, PlanRequest, llama_shape, plan
from llamahomed.planner.choose import Plan
from llamahomed.service.scheduler import Load, Refuse, Wait, decide, view

GiB = 2**30
REQUEST = PlanRequest(n_ctx=4096, ram_reserve=0, vram_reserve=0)
ONE_B = [Candidate("llama-1B:Q4_K_M", "Q4_K_M", 0, llama_shape("1B", "Q4_K_M"))]


@dataclass
class Loaded:
    held: Held
    last_used: float
    idle: bool = True


def on_gpu(gib: float) -> Loaded:
    return Loaded(Held(ram=GiB // 4, vram=(int(gib * GiB),)), last_used=0.0)


def plan_1b(machine: Machine) -> Plan:
    return plan(ONE_B, machine, REQUEST)


def needs() -> int:
    """VRAM the 1B model takes entirely on the GPU."""
    alone = plan_1b(simulated_machine(ram=64 * GiB, vram=80 * GiB))
    assert alone.choice is not None and alone.choice.placement == "gpu"
    return alone.choice.estimate.vram


def test_a_model_that_fits_beside_the_loaded_ones_evicts_nothing() -> None:
    machine = simulated_machine(ram=64 * GiB, vram=24 * GiB)
    decision = decide("b", plan_1b, machine, {"a": on_gpu(10), "c": on_gpu(5)}, max_loaded=3)
    assert isinstance(decision, Load) and decision.evict == ()
    assert decision.plan.choice is not None and decision.plan.choice.placement == "gpu"
    assert any("2 loaded model(s) hold" in note for note in decision.plan.machine.notes)


def test_only_the_least_recently_used_idle_model_is_evicted_when_one_is_enough() -> None:
    vram = needs() / GiB
    machine = simulated_machine(ram=64 * GiB, vram=int(2 * vram + 3) * GiB)
    old, new = on_gpu(vram + 1), on_gpu(vram + 1)
    old.last_used, new.last_used = 1.0, 2.0
    decision = decide("b", plan_1b, machine, {"new": new, "old": old}, max_loaded=3)
    assert isinstance(decision, Load) and decision.evict == ("old",)


def test_an_idle_model_is_evicted_rather_than_the_new_one_loading_partly_on_the_gpu() -> None:
    vram = needs() / GiB
    machine = simulated_machine(ram=64 * GiB, vram=int(vram * 1.5 * GiB))
    beside = plan_1b(view(machine, {"a": on_gpu(vram * 0.8).held}, frozenset()))
    assert beside.choice is not None and beside.choice.placement == "partial"  # would fit, worse
    decision = decide("b", plan_1b, machine, {"a": on_gpu(vram * 0.8)}, max_loaded=3)
    assert isinstance(decision, Load) and decision.evict == ("a",)
    assert decision.plan.choice is not None and decision.plan.choice.placement == "gpu"


def test_a_busy_model_holding_the_memory_makes_the_request_wait() -> None:
    machine = simulated_machine(ram=2 * GiB, vram=0)
    busy = Loaded(Held(ram=int(1.9 * GiB)), last_used=0.0, idle=False)
    decision = decide("b", plan_1b, machine, {"a": busy}, max_loaded=3)
    assert isinstance(decision, Wait) and decision.reason == "memory"
    assert decision.holders == ("a",) and decision.needed > 0


def test_max_loaded_models_evicts_the_oldest_idle_and_waits_when_all_are_busy() -> None:
    machine = simulated_machine(ram=64 * GiB, vram=80 * GiB)
    loaded = {"x": on_gpu(1), "y": on_gpu(1)}
    loaded["x"].last_used, loaded["y"].last_used = 5.0, 3.0
    decision = decide("b", plan_1b, machine, loaded, max_loaded=2)
    assert isinstance(decision, Load) and decision.evict == ("y",)
    for model in loaded.values():
        model.idle = False
    decision = decide("b", plan_1b, machine, loaded, max_loaded=2)
    assert isinstance(decision, Wait) and decision.reason == "max_loaded_models"
    assert decision.holders == ("x", "y")


def test_a_model_too_large_for_the_empty_machine_is_refused_without_waiting() -> None:
    machine = simulated_machine(ram=GiB // 4, vram=0)
    busy = Loaded(Held(ram=GiB // 8), last_used=0.0, idle=False)
    assert isinstance(decide("b", plan_1b, machine, {"a": busy}, max_loaded=3), Refuse)


def test_the_view_never_counts_more_free_than_the_total_less_what_stays_loaded() -> None:
    machine = simulated_machine(ram=16 * GiB, vram=8 * GiB)  # its reading ignores our models
    held = {"a": Held(ram=4 * GiB, vram=(3 * GiB,)), "b": Held(ram=2 * GiB, vram=(1 * GiB,))}
    alongside = view(machine, held, frozenset())
    assert alongside.ram_available == 10 * GiB and alongside.gpus[0].free == 4 * GiB
    without_a = view(machine, held, frozenset({"a"}))
    assert without_a.ram_available == 14 * GiB and without_a.gpus[0].free == 7 * GiB
