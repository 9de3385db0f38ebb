"""Plans across this machine and ggml RPC servers' devices (planner/remote.py, layout.py)."""

from __future__ import annotations

from dataclasses import dataclass

from llamahomed.core.resources import simulated_machine
from llamahomed.planner import Candidate, PlanRequest, llama_shape
from llamahomed.planner.layout import tensor_split
from llamahomed.planner.remote import plan_across, uses_remote, with_remotes

GiB, MiB = 2**30, 2**20


@dataclass(frozen=True)
class Device:  # what engine.rpc.RemoteDevice carries
    endpoint: str
    index: int
    name: str
    free: int
    total: int


def llama8b() -> list[Candidate]:
    return [Candidate("llama-8b:q4_k_m", "Q4_K_M", 0, llama_shape("8B", "Q4_K_M"))]


def hosts(*free_gib: float) -> list[Device]:
    return [Device(f"10.0.0.{i + 2}:50052", 0, "RPC0", int(f * GiB), int(f * GiB))
            for i, f in enumerate(free_gib)]


REQ = PlanRequest(n_ctx=4096, n_ctx_explicit=True, n_seq=1, flash_attn=True)


def test_a_model_that_fits_here_stays_here_unless_the_policy_says_always() -> None:
    machine = with_remotes(simulated_machine(ram=32 * GiB), hosts(8, 8), {})
    here = plan_across(llama8b(), machine, REQ, policy="when_needed")
    assert here.choice is not None and not uses_remote(here)
    assert here.choice.placement == "cpu"
    assert any("RPC devices" in r and "when_needed" in r for r in here.reasons)
    assert [g["endpoint"] for g in here.to_dict()["machine"]["gpus"]] == [
        "10.0.0.2:50052#0", "10.0.0.3:50052#0"]  # shown, not used

    always = plan_across(llama8b(), machine, REQ, policy="always")
    assert always.choice is not None and uses_remote(always)
    assert not always.choice.params.flash_attn  # llama.cpp turns it off across RPC devices


def test_a_model_too_big_for_this_machine_is_split_by_free_memory_with_reasons() -> None:
    machine = with_remotes(simulated_machine(ram=3 * GiB), hosts(3, 5), {})
    result = plan_across(llama8b(), machine, REQ, policy="when_needed")
    assert result.choice is not None and uses_remote(result), result.refusal
    layout = result.to_dict()["layout"]
    assert [r["backend"] for r in layout] == ["cpu", "rpc", "rpc"]
    assert sum(r["n_layers"] for r in layout) == 32
    first, second = layout[1], layout[2]
    assert 0 < first["n_layers"] < second["n_layers"]  # the host with more free memory takes more
    # The estimate's per-device parts fit each device's budget (free less the reserve).
    for part, free in zip(result.choice.estimate.gpus, (3 * GiB, 5 * GiB)):
        assert part.total <= free - REQ.vram_reserve
    # llama.cpp's rule: n_gpu_layers positions of n_layer + 1, the output head last (and first
    # to move): the layout hands llama.cpp exactly those positions as layer counts.
    assert layout[-1]["output"] and not layout[0]["output"]
    assert sum(tensor_split(layout)) == result.choice.params.n_gpu_layers
    assert layout[0]["n_layers"] == 33 - result.choice.params.n_gpu_layers
    assert any("does not fit this machine alone" in r for r in result.reasons)
    assert any(r.startswith("RPC0 (10.0.0.3:50052): layers") for r in result.reasons)


def test_the_reserve_applies_to_remote_devices_and_a_missing_host_is_said() -> None:
    machine = with_remotes(simulated_machine(ram=3 * GiB), hosts(1.0),
                           {"10.0.0.9:50052": "Connection refused"})
    reserved = PlanRequest(n_ctx=4096, n_ctx_explicit=True, vram_reserve=1 * GiB)
    result = plan_across(llama8b(), machine, reserved, policy="always")
    assert result.choice is None  # 1 GiB free less a 1 GiB reserve leaves nothing there
    assert "RPC host 10.0.0.9:50052 left out of the plan: Connection refused" in result.reasons
    assert result.refusal


def test_without_rpc_servers_nothing_changes() -> None:
    machine = simulated_machine(ram=32 * GiB)
    result = plan_across(llama8b(), machine, REQ, policy="always")
    assert result.choice is not None and result.choice.params.flash_attn
    assert result.to_dict()["layout"] == [{"device": "CPU", "backend": "cpu", "layers": "0-31",
                                           "n_layers": 32, "output": True}]


def test_a_refusal_names_the_rpc_hosts_that_were_left_out() -> None:
    machine = with_remotes(simulated_machine(ram=2 * GiB), [],
                           {"10.0.0.9:50052": "Connection refused"})
    result = plan_across(llama8b(), machine, REQ, policy="when_needed")
    assert result.choice is None
    assert "Not counted: RPC host 10.0.0.9:50052 left out of the plan: Connection refused" in result.refusal
    assert result.details["rpc_hosts_left_out"] == [
        "10.0.0.9:50052 left out of the plan: Connection refused"]
