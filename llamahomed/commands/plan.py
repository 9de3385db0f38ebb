"""``llamahomed plan MODEL``: the load plan for this (or a simulated) machine; loads nothing."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from llamahomed.core.errors import StartupError
from llamahomed.core.resources import Machine, read_machine, simulated_machine
from llamahomed.core.settings import Settings, parse_size
from llamahomed.planner import (
    Candidate,
    ModelShape,
    Plan,
    PlanRequest,
    llama_shape,
    plan,
)
from llamahomed.planner.synthetic import LLAMA_SIZES, MIXES

GiB = 2**30


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("plan", parents=[common], help="show how a model would load here (loads nothing)",
                       description="Plan a load: variant, GPU layers, context, KV type, batch and "
                       "threads, with the options weighed. MODEL is a model id or id:quant in the "
                       "store, a catalog id, a .gguf path, or a Llama shape (llama-1b, llama-8b, "
                       "llama-70b) in every quantization.")
    p.add_argument("model")
    p.add_argument("--ctx", type=int, help="context to plan for (default: the n_ctx setting)")
    p.add_argument("--policy", choices=["quality", "speed"], help="override plan_policy")
    p.add_argument("--ram", help="simulate a machine with this much RAM (e.g. 16GiB)")
    p.add_argument("--vram", help="simulated GPU memory per GPU (e.g. 8GiB)")
    p.add_argument("--gpus", type=int, help="simulated number of GPUs (default 1 with --vram)")
    p.add_argument("--apple", action="store_true", help="simulate Apple silicon (unified memory)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def machine_from(args: argparse.Namespace) -> Machine:
    if not (args.ram or args.vram or args.gpus or args.apple):
        return read_machine()
    real = read_machine(llama=None)
    try:
        ram = parse_size(args.ram) if args.ram else real.ram_total
        vram = parse_size(args.vram) if args.vram else 0
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if args.gpus and not vram and not args.apple:
        raise StartupError("--gpus needs --vram (memory per GPU)")
    return simulated_machine(ram=ram, vram=vram, gpus=args.gpus or 1, apple=args.apple,
                             cores=real.cpu_physical)


def candidates_for(name: str, settings: Settings) -> list[Candidate]:
    from llamahomed.planner import candidates_from_entries
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.gguf_meta import GGUFError, read_gguf_info
    from llamahomed.registry.store import ModelRegistry

    size = name.lower().removeprefix("llama-").upper()
    if name.lower().startswith("llama-") and size in LLAMA_SIZES:
        return [Candidate(f"{name.lower()}:{q.lower()}", q, 0, llama_shape(size, q)) for q in MIXES]
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        try:
            info = read_gguf_info(path)
        except GGUFError as exc:
            raise StartupError(f"{path} is not a usable GGUF file: {exc}") from exc
        return [Candidate(path.name, info.quantization, info.file_size, ModelShape.from_info(info),
                          file_key=f"{path.name}|{info.file_size}")]
    catalog = Catalog.load()
    registry = ModelRegistry(settings.models_path, catalog)
    groups = registry.models()
    key = name.strip().lower()
    if key in groups:
        return candidates_from_entries(groups[key])
    known = catalog.lookup(key)
    if known is not None and known.id in groups:
        return candidates_from_entries(groups[known.id])
    if known is not None:  # not on disk: plan from the catalog's sizes
        return [Candidate(f"{known.id}:{v.quantization.lower()}", v.quantization, v.size or 0,
                          None, ref=v) for v in known.variants if v.size]
    return candidates_from_entries([registry.resolve(name, groups)])


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def render(result: Plan) -> str:
    m = result.machine
    gpus = ", ".join(f"{g.name} {_gib(g.free)}/{_gib(g.total)} GiB free" for g in m.gpus) or "none"
    lines = [f"machine: {m.cpu_physical} physical / {m.cpu_logical} logical cores, RAM "
             f"{_gib(m.ram_available)} of {_gib(m.ram_total)} GiB available, GPUs: {gpus}"
             + (" (simulated)" if m.simulated else "")]
    c = result.choice
    if c is None:
        lines.append(f"plan: REFUSED: {result.refusal}")
    else:
        lines.append(f"plan: {c.candidate.name} ({c.placement}, {c.params.n_gpu_layers} GPU layers), "
                     f"n_ctx {c.params.n_ctx}, KV {c.params.kv_type}, n_batch {result.n_batch}, "
                     f"n_ubatch {c.params.n_ubatch}, {result.n_threads} threads")
        est = c.estimate
        lines.append(f"memory: {_gib(est.cpu.total)} GiB RAM + {_gib(est.vram)} GiB GPU"
                     f"{' (measured at an earlier load)' if est.measured else ''}")
    if c is not None and result.details.get("layout"):
        lines.append("layers: " + "; ".join(
            f"{r['device']} {r['layers']}" + (" + output" if r["output"] else "")
            for r in result.details["layout"]))
    lines.append("reasons:")
    lines += [f"  - {r}" for r in result.reasons]
    lines.append("options weighed:")
    lines.append(f"  {'VARIANT':<28} {'BPW':>5} {'PLACE':<7} {'NGL':>4} {'CTX':>7} {'KV':<5} "
                 f"{'RAM GiB':>8} {'GPU GiB':>8}  FITS")
    for o in result.options:
        bpw = o.candidate.shape.bits_per_weight if o.candidate.shape else 0.0
        mark = "*" if o is c else ("yes" if o.fits else f"no: {o.note}")
        lines.append(f"  {o.candidate.name:<28} {bpw:>5.2f} {o.placement:<7} "
                     f"{o.params.n_gpu_layers:>4} {o.params.n_ctx:>7} {o.params.kv_type:<5} "
                     f"{_gib(o.estimate.cpu.total):>8} {_gib(o.estimate.vram):>8}  {mark}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    candidates = candidates_for(args.model, settings)
    request = PlanRequest.from_settings(settings, args.ctx)
    if args.policy:
        request = dataclasses.replace(request, policy=args.policy)
    machine = machine_from(args)
    system = settings.system_settings
    if system.rpc_servers and system.engine == "batched" and not machine.simulated:
        from llamahomed.planner.remote import plan_across
        from llamahomed.service.remote_hosts import RemoteHosts

        machine = RemoteHosts().machine(machine, system.rpc_servers, {}, args.model)
        result = plan_across(candidates, machine, request, policy=system.rpc_policy)
    else:
        result = plan(candidates, machine, request)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0 if result.choice is not None else 1
