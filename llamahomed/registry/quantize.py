"""Lower-precision variants made with llama.cpp's own quantizer (``llama_model_quantize``).

The quantizer runs in a child process (``python -m llamahomed.registry.quantize``): a crash or an
abort inside llama.cpp cannot take the caller down, Ctrl-C stops it at once, and the caller stays
free to draw progress. The child reports each tensor it finishes as one line on stdout; llama.cpp's
other log lines go to its stderr, and the last of them explain a failure.

The result is written to a hidden partial file in the store, its header is checked, and only then
is it linked into place as ``<model id>-<TYPE>.gguf`` (never over an existing file), which the
store groups under the same model id as its source (``store.model_id_for``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llamahomed.core.errors import (
    AlreadyExists,
    InsufficientStorage,
    InvalidRequest,
    QuantizeFailed,
)
from llamahomed.registry.gguf_meta import GGUFError, GGUFInfo, read_gguf_info
from llamahomed.registry.store import ModelEntry

__all__ = [
    "QUANT_TYPES", "QuantType", "QuantizeProgress", "estimate_size", "parse_type",
    "propose_quantization", "quality_rank", "quantize_model", "variant_path",
]


@dataclass(frozen=True)
class QuantType:
    """A target llama.cpp can make without an importance matrix."""

    name: str
    ftype: int  # llama.cpp's enum llama_ftype
    bpw: float  # typical bits per weight of the quantized matrices (llama.cpp's own tables)


# Best quality first. IQ1/IQ2/IQ3_XXS and Q2_K_S are left out: llama.cpp needs an importance
# matrix to make them usable.
QUANT_TYPES: dict[str, QuantType] = {q.name: q for q in (
    QuantType("F32", 0, 32.0), QuantType("BF16", 32, 16.0), QuantType("F16", 1, 16.0),
    QuantType("Q8_0", 7, 8.5), QuantType("Q6_K", 18, 6.5625), QuantType("Q5_K_M", 17, 5.69),
    QuantType("Q5_K_S", 16, 5.54), QuantType("Q5_1", 9, 6.0), QuantType("Q5_0", 8, 5.5),
    QuantType("Q4_K_M", 15, 4.83), QuantType("Q4_K_S", 14, 4.57), QuantType("IQ4_NL", 25, 4.5),
    QuantType("IQ4_XS", 30, 4.25), QuantType("Q4_1", 3, 5.0), QuantType("Q4_0", 2, 4.5),
    QuantType("Q3_K_L", 13, 4.22), QuantType("Q3_K_M", 12, 3.89), QuantType("Q3_K_S", 11, 3.5),
    QuantType("Q2_K", 10, 3.2),
)}
_ORDER = list(QUANT_TYPES)
UNQUANTIZED = ("F32", "BF16", "F16")
_OUTPUT_BPW = 6.5625  # llama.cpp keeps the output matrix at Q6_K for every type below Q8_0
_PROGRESS_RE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def quality_rank(quantization: str) -> int:
    """Position in quality order (0 = best); unknown names rank after every known one."""
    key = quantization.upper()
    return _ORDER.index(key) if key in QUANT_TYPES else len(_ORDER)


def parse_type(text: str) -> QuantType:
    """The quantization a user names (case-insensitive), or a clear error listing the choices."""
    found = QUANT_TYPES.get(text.strip().upper())
    if found is None:
        raise InvalidRequest(f"unknown quantization type {text!r}; choose one of {', '.join(_ORDER)}",
                             details={"type": text, "choices": _ORDER})
    return found


def variant_path(entry: ModelEntry, qtype: QuantType, models_dir: Path) -> Path:
    """Where the new variant goes: ``<models dir>/<model id>-<TYPE>.gguf``."""
    return models_dir / f"{entry.id}-{qtype.name}.gguf"


def estimate_size(info: GGUFInfo, qtype: QuantType) -> int:
    """Approximate file size of ``info``'s model quantized to ``qtype``.

    Matrices take ``qtype.bpw`` bits per weight, the output matrix (or the tied embedding) Q6_K
    (Q8_0 when its rows are not a multiple of 256 wide) below Q8_0, vectors (norms) keep their size, and the metadata is carried over as it is.
    """
    names = {t.name for t in info.tensors}
    output = "output.weight" if "output.weight" in names else "token_embd.weight"
    total = info.file_size - info.tensor_bytes
    for tensor in info.tensors:
        if len(tensor.shape) < 2:
            total += tensor.nbytes
            continue
        bpw = qtype.bpw
        if tensor.name == output and qtype.bpw < _OUTPUT_BPW:
            # Q6_K rows are 256 wide; narrower models get Q8_0
            bpw = _OUTPUT_BPW if tensor.shape[0] % 256 == 0 else 8.5
        total += int(tensor.n_elements * bpw / 8)
    return total


def propose_quantization(entry: ModelEntry, target_bytes: int) -> str | None:
    """The best-quality type a smaller variant of ``entry`` could be made in, or ``None``.

    For the planner: when the only variant on disk is too large and ``auto_quantize`` is on, it
    asks for the type whose estimated file size fits in ``target_bytes`` (the bytes the weights
    may take on the device it plans for), then runs ``quantize_model`` with it. ``None`` when
    ``entry`` already fits, when it is itself quantized (requantizing loses too much quality to
    do unasked), or when even the smallest type would not fit.
    """
    if entry.size <= target_bytes:
        return None
    source = entry.quantization.upper()
    if source not in UNQUANTIZED:
        return None
    for name in _ORDER[quality_rank(source) + 1:]:
        qtype = QUANT_TYPES[name]
        if qtype.name in UNQUANTIZED:
            continue
        if estimate_size(entry.info, qtype) <= target_bytes:
            return qtype.name
    return None


@dataclass(frozen=True)
class QuantizeProgress:
    """Where a running quantization is: ``done`` of ``total`` tensors, ``elapsed`` seconds."""

    done: int
    total: int | None
    tensor: str
    elapsed: float


Progress = Callable[[QuantizeProgress], None]


def quantize_model(entry: ModelEntry, qtype: QuantType, models_dir: Path, *,
                   threads: int | None = None, allow_requantize: bool = False,
                   progress: Progress | None = None, tick: float = 0.2) -> Path:
    """Quantize ``entry`` to ``qtype`` as a new variant file in ``models_dir`` and return its path.

    Refuses to overwrite a file, to make a variant the model already has, to requantize an
    already quantized model unless ``allow_requantize``, and to start without the disk space
    the estimate needs. ``progress`` is called for every tensor and every ``tick`` seconds.
    """
    target = variant_path(entry, qtype, models_dir)
    _check_request(entry, qtype, target, models_dir, allow_requantize)
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = models_dir / f".{target.name}.partial"
    try:
        _run_child(entry.path, partial, qtype, threads or _default_threads(), allow_requantize,
                   progress, tick)
        _check_result(partial, qtype)
        _link_into_place(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _check_request(entry: ModelEntry, qtype: QuantType, target: Path, models_dir: Path,
                   allow_requantize: bool) -> None:
    source = entry.quantization.upper()
    if source == qtype.name:
        raise AlreadyExists(f"{entry.path.name} is already {qtype.name}",
                            details={"file": entry.path.name})
    if target.exists():
        raise AlreadyExists(f"{target} already exists; remove it first to make it again",
                            details={"file": target.name})
    if source not in UNQUANTIZED and not allow_requantize:
        raise InvalidRequest(
            f"{entry.path.name} is already quantized ({entry.quantization}); quantizing it again "
            "loses more quality than quantizing the F16/F32 original. Pass --allow-requantize "
            "to do it anyway", details={"source": entry.quantization, "type": qtype.name})
    needed = estimate_size(entry.info, qtype)
    free = shutil.disk_usage(models_dir if models_dir.exists() else models_dir.parent).free
    if needed > free:
        raise InsufficientStorage(
            f"quantizing {entry.path.name} to {qtype.name} needs about {needed} bytes, "
            f"but {models_dir} has {free} free", details={"needed": needed, "free": free})


def _default_threads() -> int:
    """Physical cores: the quantizer gains nothing from hyper-threads."""
    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def _run_child(source: Path, partial: Path, qtype: QuantType, threads: int,
               allow_requantize: bool, progress: Progress | None, tick: float) -> None:
    command = [sys.executable, "-m", "llamahomed.registry.quantize", str(source), str(partial),
               str(qtype.ftype), str(threads), "1" if allow_requantize else "0"]
    started = time.monotonic()
    state = QuantizeProgress(0, None, "", 0.0)
    lines: queue.Queue[str | None] = queue.Queue()
    with open(os.devnull, "rb") as stdin, _temp_log(partial) as log_file:
        child = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                                 stderr=log_file, text=True)
        assert child.stdout is not None
        reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    line = lines.get(timeout=tick)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    event = json.loads(line)
                    state = QuantizeProgress(event["done"], event["total"], event["tensor"], 0.0)
                if progress is not None:
                    progress(QuantizeProgress(state.done, state.total, state.tensor,
                                              time.monotonic() - started))
            returncode = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            reader.join(timeout=5)
            child.stdout.close()
        if returncode != 0:
            log_file.seek(0)
            tail = log_file.read().decode(errors="replace").strip().splitlines()[-8:]
            raise QuantizeFailed(
                f"llama.cpp could not quantize {source.name} to {qtype.name} (exit {returncode})"
                + (": " + " | ".join(tail) if tail else ""),
                details={"source": source.name, "type": qtype.name, "exit_code": returncode,
                         "log": tail})


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.strip())
    lines.put(None)


@contextlib.contextmanager
def _temp_log(partial: Path) -> Iterator[IO[bytes]]:
    """A scratch file for the child's stderr (a file, not a pipe: nothing can fill up)."""
    path = partial.with_name(partial.name + ".log")
    handle = open(path, "w+b")  # noqa: SIM115 - closed below
    try:
        yield handle
    finally:
        handle.close()
        path.unlink(missing_ok=True)


def _check_result(partial: Path, qtype: QuantType) -> None:
    try:
        info = read_gguf_info(partial)
    except (GGUFError, OSError) as exc:
        raise QuantizeFailed(f"llama.cpp wrote an unreadable file: {exc}") from exc
    if info.quantization.upper() != qtype.name:
        raise QuantizeFailed(f"llama.cpp wrote a {info.quantization} file, not {qtype.name}",
                             details={"type": qtype.name, "written": info.quantization})


def _link_into_place(partial: Path, target: Path) -> None:
    """Atomic and never over an existing file: a hard link fails when the name is taken."""
    try:
        os.link(partial, target)
    except FileExistsError as exc:
        raise AlreadyExists(f"{target} appeared while quantizing; not overwritten",
                            details={"file": target.name}) from exc
    except OSError:
        if target.exists():
            raise AlreadyExists(f"{target} already exists", details={"file": target.name}) from None
        os.replace(partial, target)


def _child(argv: list[str]) -> int:
    """The child process: run llama_model_quantize, one JSON line per finished tensor."""
    import ctypes

    import llama_cpp

    source, out, ftype, threads, allow = argv
    pending = [""]

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        pending[0] += text.decode(errors="replace")
        while "\n" in pending[0]:
            line, pending[0] = pending[0].split("\n", 1)
            match = _PROGRESS_RE.match(line)
            if match:
                done, total, name = match.groups()
                print(json.dumps({"done": int(done), "total": int(total), "tensor": name}),
                      flush=True)
            elif line.strip():
                print(line, file=sys.stderr, flush=True)

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p())
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads)
    params.allow_requantize = allow == "1"
    result = llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params))
    return int(result)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
