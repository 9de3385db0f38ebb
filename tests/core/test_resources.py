"""Machine readings: psutil, NVML (with its failures) and llama.cpp's device list.

No NVIDIA GPU exists on the test machine, so NVML is replaced by small stand-in modules that
behave like ``pynvml``: one that fails the way a machine without a driver fails, one that lists
GPUs. llama.cpp's device list is read from the real library.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from llamahomed.planner import Candidate, PlanRequest, llama_shape, plan
from llamahomed.core.resources import (GPU, apple_gpu_budget, read_llama_devices, read_machine,
                                  read_nvml, simulated_machine)

GiB = 2**30


class NVMLError(Exception):
    pass


def failing_nvml() -> Any:
    def init() -> None:
        raise NVMLError("NVML Shared Library Not Found")
    return SimpleNamespace(nvmlInit=init)


def nvml_with(gpus: list[dict[str, Any]], broken_util: bool = False) -> Any:
    calls: list[str] = []

    def utilization(handle: int) -> Any:
        if broken_util:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=gpus[handle]["util"])

    module = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, calls=calls,
        nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: len(gpus), nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: gpus[h]["name"].encode(),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            total=gpus[h]["total"], free=gpus[h]["free"], used=gpus[h]["total"] - gpus[h]["free"]),
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetTemperature=lambda h, sensor: gpus[h]["temp"])
    return lambda: module


H100 = {"name": "NVIDIA H100 80GB HBM3", "total": 80 * GiB, "free": 79 * GiB, "util": 3, "temp": 31}


def test_a_missing_nvml_library_gives_no_gpu_and_says_why() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")
    gpus, why = read_nvml(missing)
    assert gpus == [] and why is not None and "ImportError" in why


def test_an_nvml_error_gives_no_gpu_and_says_why() -> None:
    gpus, why = read_nvml(failing_nvml)
    assert gpus == [] and why is not None and "NVML Shared Library Not Found" in why


def test_nvml_gpus_are_read_with_memory_utilization_and_temperature() -> None:
    load = nvml_with([H100, {**H100, "name": "NVIDIA L4", "total": 24 * GiB, "free": 20 * GiB}])
    gpus, why = read_nvml(load)
    assert why is None
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    assert gpus[1].total == 24 * GiB and gpus[1].free == 20 * GiB and gpus[1].used == 4 * GiB
    assert gpus[0].utilization == 3 and gpus[0].temperature == 31 and gpus[0].backend == "cuda"
    assert load().calls == ["init", "shutdown"]


def test_a_gpu_without_utilization_reports_none_not_an_error() -> None:
    gpus, _ = read_nvml(nvml_with([H100], broken_util=True))
    assert gpus[0].utilization is None and gpus[0].temperature == 31


def test_the_real_machine_reading_matches_psutil() -> None:
    machine = read_machine(nvml=failing_nvml)
    assert machine.ram_total == psutil.virtual_memory().total
    assert 0 < machine.ram_available <= machine.ram_total
    assert machine.cpu_physical >= 1 and machine.cpu_logical >= machine.cpu_physical
    assert not machine.simulated


def test_an_nvml_failure_yields_a_cpu_plan_with_the_reason() -> None:
    machine = read_machine(nvml=failing_nvml)
    assert machine.gpus == () or all(g.backend != "cuda" for g in machine.gpus)
    result = plan([Candidate("tiny", "Q4_K_M", 0, llama_shape("1B", "Q4_K_M"))], machine,
                  PlanRequest(n_ctx=2048))
    assert result.choice is not None and result.choice.placement == "cpu"
    assert result.choice.params.n_gpu_layers == 0 and not result.choice.estimate.gpus
    assert any("NVML Shared Library Not Found" in r for r in result.reasons)


def test_llama_cpps_device_list_is_read_through_ctypes() -> None:
    gpus, why = read_llama_devices()
    # This build is CPU-only; a CUDA or Metal build lists its devices instead.
    assert gpus or (why is not None and "no GPU backend" in why)
    for gpu in gpus:
        assert gpu.total >= gpu.free >= 0


def test_nvml_gpus_that_llama_cpp_cannot_use_are_not_planned_for() -> None:
    _, why = read_llama_devices()
    if why is None:
        pytest.skip("this llama.cpp build has a GPU backend")
    machine = read_machine(nvml=nvml_with([H100]))
    assert machine.gpus == ()
    assert any("no CUDA backend" in note for note in machine.notes)


def test_apple_unified_memory_gives_the_gpu_a_bounded_share() -> None:
    assert apple_gpu_budget(16 * GiB) == int(16 * GiB * 2 / 3)
    assert apple_gpu_budget(64 * GiB) == 48 * GiB
    machine = simulated_machine(ram=16 * GiB, apple=True)
    assert machine.apple and machine.gpus[0].unified and machine.gpus[0].backend == "metal"
    assert machine.gpus[0].total == apple_gpu_budget(16 * GiB)


def test_simulated_machines_have_the_gpus_asked_for() -> None:
    machine = simulated_machine(ram=64 * GiB, vram=24 * GiB, gpus=2)
    assert [g.total for g in machine.gpus] == [24 * GiB, 24 * GiB]
    assert simulated_machine(ram=8 * GiB).gpus == ()
    data = machine.to_dict()
    assert data["simulated"] is True and len(data["gpus"]) == 2
    assert isinstance(machine.gpus[0], GPU)


def test_cuda_gpus_seen_by_both_nvml_and_llama_cpp_are_planned_for() -> None:
    cuda = GPU(0, "NVIDIA H100 80GB HBM3", "cuda", 0, 0)
    machine = read_machine(nvml=nvml_with([H100]), llama=lambda: ([cuda], None))
    assert [g.name for g in machine.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert machine.gpus[0].free == 79 * GiB  # memory from NVML
    result = plan([Candidate("q4", "Q4_K_M", 0, llama_shape("8B", "Q4_K_M"))], machine,
                  PlanRequest(n_ctx=8192))
    assert result.choice is not None and result.choice.placement == "gpu"


def test_other_llama_cpp_backends_are_used_when_there_is_no_nvidia_gpu() -> None:
    vulkan = GPU(0, "AMD Radeon RX 7900", "vulkan", 16 * GiB, 15 * GiB)
    machine = read_machine(nvml=failing_nvml, llama=lambda: ([vulkan], None))
    assert [g.backend for g in machine.gpus] == ["vulkan"] and machine.gpus[0].free == 15 * GiB
    assert any("vulkan" in note for note in machine.notes)


def test_the_daemon_reads_llama_cpps_devices_in_a_child_process() -> None:
    from llamahomed.core.resources import llama_devices_isolated

    gpus, why = llama_devices_isolated()
    assert (gpus, why) == read_llama_devices()  # the same answer as reading it here
    assert llama_devices_isolated() is llama_devices_isolated()  # read once, then cached
