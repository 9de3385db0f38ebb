"""Plans that may use other hosts' devices (ggml RPC servers) besides this machine's.

The RPC devices are part of the machine (``GPU`` entries with backend ``rpc``): the same fitter
weighs them with the same reserve (``vram_reserve`` per device) and splits layers by their free
memory. What this step adds is the policy: with ``when_needed`` a model that fits this machine
alone stays here (the network is slower than memory) and the hosts are only weighed when it does
not; with ``always`` they are weighed at once. A load across hosts runs without flash attention
(llama.cpp turns it off when a layer's attention is not on the layer's device, which it cannot
check across RPC devices), so those options are weighed without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from llamahomed.core.resources import GPU, Machine
from llamahomed.core.settings import format_size
from llamahomed.planner.candidates import Candidate
from llamahomed.planner.choose import Plan, PlanRequest, plan
from llamahomed.planner.measured import Measurements

RpcPolicy = Literal["when_needed", "always"]
GiB = 2**30


def with_remotes(machine: Machine, devices: Sequence[Any], problems: Mapping[str, str]) -> Machine:
    """``machine`` plus the RPC servers' devices (``RemoteDevice``-like: endpoint, index, name,
    free, total); a note for each server left out and why."""
    gpus = list(machine.gpus)
    for d in devices:
        gpus.append(GPU(index=len(gpus), name=f"{d.name} ({d.endpoint})", backend="rpc",
                        total=int(d.total), free=int(d.free), used=int(d.total) - int(d.free),
                        endpoint=f"{d.endpoint}#{d.index}"))
    notes = [f"RPC host {ep} left out of the plan: {why}" for ep, why in problems.items()]
    return replace(machine, gpus=tuple(gpus), notes=machine.notes + tuple(notes))


def remote_gpus(machine: Machine) -> list[GPU]:
    return [g for g in machine.gpus if g.backend == "rpc"]


def uses_remote(result: Plan) -> bool:
    """Whether the plan's choice puts layers on an RPC device."""
    layout = result.details.get("layout") or []
    return any(r.get("backend") == "rpc" and (r["n_layers"] or r["output"]) for r in layout)


def plan_across(candidates: Sequence[Candidate], machine: Machine, req: PlanRequest,
                measurements: Measurements | None = None,
                policy: RpcPolicy = "when_needed") -> Plan:
    """``plan`` on ``machine``, its RPC devices weighed as the policy says (see module doc)."""
    remote = remote_gpus(machine)
    if not remote:
        return _say_missing(plan(candidates, machine, req, measurements), machine)
    hosts = ", ".join(g.endpoint for g in remote)
    if policy == "when_needed":
        local = plan(candidates, replace(machine, gpus=tuple(g for g in machine.gpus
                                                             if g.backend != "rpc")),
                     req, measurements)
        if local.choice is not None:
            why = (f"fits on this machine: the RPC devices ({hosts}) are not used "
                   "(rpc_policy when_needed; the network is slower than memory)")
            return replace(local, reasons=local.reasons + (why,), machine=machine)
    across = replace(req, flash_attn=False)
    result = plan(candidates, machine, across, measurements)
    if result.choice is None:
        return _say_missing(result, machine)
    return replace(result, reasons=result.reasons + tuple(_device_reasons(result, policy)))


def _say_missing(result: Plan, machine: Machine) -> Plan:
    """A refusal names the RPC hosts that were left out (what would have been there)."""
    missing = [n.removeprefix("RPC host ") for n in machine.notes if n.startswith("RPC host ")]
    if result.choice is not None or not missing:
        return result
    return replace(result, refusal=result.refusal + ". Not counted: RPC host "
                   + "; ".join(missing), details={**result.details, "rpc_hosts_left_out": missing})


def _device_reasons(result: Plan, policy: RpcPolicy) -> list[str]:
    """One line per device: its layers, and what it holds of what it has free."""
    assert result.choice is not None
    est = result.choice.estimate
    out = [("rpc_policy always: the RPC devices take layers" if policy == "always" else
            "does not fit this machine alone: split across this machine and its RPC devices")
           + " (flash attention off across RPC devices)"]
    shape = result.choice.candidate.shape
    if shape is not None and result.choice.params.n_gpu_layers > 0:
        out.append(f"the output head is on the last RPC device (llama.cpp offloads it first): "
                   f"each token's logits ({format_size(4 * shape.n_vocab)}) cross the network")
    gpus = {g.name: g for g in result.machine.gpus}
    parts = iter(est.gpus)
    for row in result.details.get("layout") or []:
        if row["backend"] == "cpu":
            out.append(f"CPU: layers {row['layers']}{' and the output head' if row['output'] else ''}"
                       f", {_gib(est.cpu.total)} of {_gib(result.machine.ram_available)} RAM "
                       "available")
            continue
        part = next(parts, None)
        gpu = gpus.get(row["device"])
        held = _gib(part.total) if part is not None else "?"
        free = _gib(gpu.free) if gpu is not None else "?"
        out.append(f"{row['device']}: layers {row['layers']}"
                   f"{' and the output head' if row['output'] else ''}, {held} of {free} free")
    return out


def _gib(n: int) -> str:
    return format_size(n)
