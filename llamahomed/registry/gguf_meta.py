"""Fast, defensive GGUF header reader (stdlib only).

Reads the metadata key/values and the tensor directory of a GGUF v2/v3 file
without touching tensor data and without llama-cpp-python.  Every length read
from the file is checked against the bytes that remain before anything is
allocated, so crafted or truncated files raise :class:`GGUFError` with a
message saying what is wrong -- they never crash or exhaust memory.

Large arrays (the tokenizer vocabulary, merges, scores) are skipped and
recorded as :class:`ArrayInfo`; arrays of at most ``SMALL_ARRAY_LIMIT`` items
and all scalar strings (including ``tokenizer.chat_template``) are kept.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["ArrayInfo", "GGMLType", "GGUFError", "GGUFInfo", "TensorInfo", "read_gguf_info",
           "read_model_info"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_DIMS = 4
MAX_STRING = 64 * 1024 * 1024
MAX_ARRAY_DEPTH = 3
SMALL_ARRAY_LIMIT = 64
_CHUNK = 1 << 20

# GGUF metadata value types -> struct format of the scalar (STRING=8, ARRAY=9).
_SCALAR_FORMATS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
                                   6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_SCALARS = {vt: struct.Struct(fmt) for vt, fmt in _SCALAR_FORMATS.items()}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_I64_MAX = (1 << 63) - 1
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset
_MIN_KV = 8 + 4 + 1  # key length, value type, smallest value


@dataclass(frozen=True)
class GGMLType:
    """A ggml tensor type: ``block_size`` elements are stored in ``type_size`` bytes."""

    name: str
    block_size: int
    type_size: int


_QK_K = 256
GGML_TYPES: dict[int, GGMLType] = {t_id: GGMLType(n, b, s) for t_id, (n, b, s) in {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", _QK_K, 84), 11: ("Q3_K", _QK_K, 110), 12: ("Q4_K", _QK_K, 144),
    13: ("Q5_K", _QK_K, 176), 14: ("Q6_K", _QK_K, 210), 15: ("Q8_K", _QK_K, 292),
    16: ("IQ2_XXS", _QK_K, 66), 17: ("IQ2_XS", _QK_K, 74), 18: ("IQ3_XXS", _QK_K, 98),
    19: ("IQ1_S", _QK_K, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", _QK_K, 110),
    22: ("IQ2_S", _QK_K, 82), 23: ("IQ4_XS", _QK_K, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", _QK_K, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", _QK_K, 54), 35: ("TQ2_0", _QK_K, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}.items()}

# llama.cpp's enum llama_ftype (general.file_type) -> short name.
LLAMA_FTYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}
_LLAMA_FTYPE_GUESSED = 1024


class GGUFError(Exception):
    """The file is not a well-formed GGUF file this reader supports."""


@dataclass(frozen=True)
class ArrayInfo:
    """Stand-in for a metadata array too large to keep: its element type and length."""

    type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor directory; ``offset`` is relative to ``data_offset``."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """The ggml type name, e.g. ``"Q4_K"``."""
        return GGML_TYPES[self.ggml_type].name

    @property
    def n_elements(self) -> int:
        """Number of elements (product of the shape)."""
        return math.prod(self.shape)


class _Reader:
    """Bounds-checked little-endian reader over a buffered window of a file."""

    def __init__(self, fp: IO[bytes], file_size: int) -> None:
        self._fp, self.file_size = fp, file_size
        self._buf, self._pos, self._base = b"", 0, 0
        self.what = "header"

    @property
    def offset(self) -> int:
        """Absolute file offset of the next byte to read."""
        return self._base + self._pos

    def remaining(self) -> int:
        """Bytes left in the file after the current offset."""
        return self.file_size - self.offset

    def _truncated(self, n: int) -> GGUFError:
        return GGUFError(f"truncated file: need {n} bytes at offset {self.offset} for "
                         f"{self.what}, but the file is only {self.file_size} bytes")

    def _fill(self, n: int) -> None:
        """Make sure at least ``n`` bytes are buffered at the current position."""
        if n > self.remaining():
            raise self._truncated(n)
        tail = self._buf[self._pos:]
        self._fp.seek(self.offset + len(tail))
        more = self._fp.read(max(n - len(tail), _CHUNK))
        self._base, self._buf, self._pos = self.offset, tail + more, 0
        if len(self._buf) < n:  # file shrank while we read it
            raise self._truncated(n)

    def take(self, n: int) -> bytes:
        """Return the next ``n`` bytes."""
        if self._pos + n > len(self._buf):
            self._fill(n)
        data = self._buf[self._pos:self._pos + n]
        self._pos += n
        return data

    def unpack(self, fmt: struct.Struct) -> Any:
        """Read one scalar with a precompiled struct."""
        if self._pos + fmt.size > len(self._buf):
            self._fill(fmt.size)
        (value,) = fmt.unpack_from(self._buf, self._pos)
        self._pos += fmt.size
        return value

    def skip(self, n: int) -> None:
        """Advance ``n`` bytes without reading them (seeking if beyond the buffer)."""
        if n > self.remaining():
            raise self._truncated(n)
        self._set_position(self._pos + n)

    def string_length(self) -> int:
        """Read a u64 string length and check it fits in the file."""
        n: int = self.unpack(_U64)
        if n > self.remaining():
            raise GGUFError(f"truncated or corrupt file: string length {n} at offset "
                            f"{self.offset - 8} in {self.what} exceeds the "
                            f"{self.remaining()} bytes left in the file")
        if n > MAX_STRING:
            raise GGUFError(f"string of {n} bytes in {self.what} exceeds the {MAX_STRING} limit")
        return n

    def string(self) -> str:
        """Read a length-prefixed UTF-8 string (invalid bytes are replaced)."""
        return self.take(self.string_length()).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings; the hot loop runs directly on the buffer.

        A string that runs past the buffer simply moves the position beyond it;
        the next round refills the buffer, and the final position is checked
        against the file size, so bogus lengths raise GGUFError.
        """
        unpack_from = _U64.unpack_from
        while count:
            if self._pos + 8 > len(self._buf):
                self._fill(8)
            buf, pos, done = self._buf, self._pos, 0
            try:
                for done in range(count):  # noqa: B007 - `done` is read after the loop
                    pos += 8 + unpack_from(buf, pos)[0]
                done = count
            except (struct.error, OverflowError):
                pass  # strings [0, done) consumed; `pos` is where string `done` starts
            if self._base + pos > self.file_size:
                raise GGUFError(f"truncated file: strings of {self.what} run past the end "
                                f"of the file ({self.file_size} bytes)")
            self._set_position(pos)
            count -= done

    def _set_position(self, pos: int) -> None:
        """Move to buffer-relative ``pos``, dropping the buffer if it lies beyond."""
        if pos <= len(self._buf):
            self._pos = pos
        else:
            self._base, self._buf, self._pos = self._base + pos, b"", 0


def _read_value(r: _Reader, vtype: int, key: str, depth: int = 0) -> Any:
    """Read one metadata value of GGUF type ``vtype``."""
    if vtype in _SCALARS:
        return r.unpack(_SCALARS[vtype])
    if vtype == _STRING:
        return r.string()
    if vtype == _ARRAY:
        return _read_array(r, key, depth)
    raise GGUFError(f"unknown metadata value type {vtype} for key {key!r} at offset {r.offset - 4}")


def _read_array(r: _Reader, key: str, depth: int) -> Any:
    """Read an array value: small ones fully, large ones as ArrayInfo."""
    if depth >= MAX_ARRAY_DEPTH:
        raise GGUFError(f"arrays nested deeper than {MAX_ARRAY_DEPTH} in key {key!r}")
    etype, length = r.unpack(_U32), r.unpack(_U64)
    if etype not in _SCALARS and etype not in (_STRING, _ARRAY):
        raise GGUFError(f"unknown array element type {etype} for key {key!r}")
    min_size = _SCALARS[etype].size if etype in _SCALARS else (8 if etype == _STRING else 12)
    if length * min_size > r.remaining():
        raise GGUFError(f"truncated or corrupt file: array {key!r} claims {length} elements, "
                        f"more than the {r.remaining()} bytes left in the file can hold")
    if length <= SMALL_ARRAY_LIMIT:
        return [_read_value(r, etype, key, depth + 1) for _ in range(length)]
    if etype in _SCALARS:
        r.skip(length * min_size)
    elif etype == _STRING:
        r.skip_strings(length)
    else:
        for _ in range(length):
            _read_array(r, key, depth + 1)
    return ArrayInfo(etype, length)


def _read_metadata(r: _Reader, n_kv: int) -> dict[str, Any]:
    """Read ``n_kv`` key/value pairs."""
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        r.what = f"metadata key #{i}"
        key = r.string()
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {key!r}")
        r.what = f"metadata value of {key!r}"
        vtype = r.unpack(_U32)
        metadata[key] = _read_value(r, vtype, key)
    return metadata


def _tensor_nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    """Size in bytes of a tensor, validating its type and shape."""
    gt = GGML_TYPES.get(ggml_type)
    if gt is None:
        raise GGUFError(f"tensor {name!r} has unknown ggml type {ggml_type}")
    if shape[0] % gt.block_size:
        raise GGUFError(f"tensor {name!r}: row length {shape[0]} is not a multiple of "
                        f"the {gt.name} block size {gt.block_size}")
    n_elements = math.prod(shape)
    if n_elements > _I64_MAX:
        raise GGUFError(f"tensor {name!r} has {n_elements} elements, which overflows int64")
    return n_elements // gt.block_size * gt.type_size


def _read_tensor_info(r: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int]:
    """Read one tensor directory entry: (name, shape, type, offset)."""
    r.what = f"tensor info #{index}"
    name = r.string()
    r.what = f"tensor info #{index} ({name!r})"
    n_dims = r.unpack(_U32)
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (must be 1..{MAX_DIMS})")
    shape = tuple(r.unpack(_U64) for _ in range(n_dims))
    if any(d <= 0 or d > _I64_MAX for d in shape):
        raise GGUFError(f"tensor {name!r} has invalid dimensions {shape}")
    return name, shape, r.unpack(_U32), r.unpack(_U64)


def _read_tensors(r: _Reader, n_tensors: int, alignment: int) -> list[TensorInfo]:
    """Read and validate the tensor directory (ranges are checked later)."""
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        name, shape, ggml_type, offset = _read_tensor_info(r, i)
        if name in seen:
            raise GGUFError(f"duplicate tensor name {name!r}")
        seen.add(name)
        if offset % alignment:
            raise GGUFError(f"tensor {name!r} offset {offset} is not a multiple of "
                            f"the alignment {alignment}")
        nbytes = _tensor_nbytes(name, shape, ggml_type)
        tensors.append(TensorInfo(name, shape, ggml_type, offset, nbytes))
    return tensors


def _check_ranges(tensors: list[TensorInfo], data_offset: int, file_size: int) -> None:
    """Every tensor must lie inside the file and no two tensors may overlap."""
    prev_end, prev_name = 0, ""
    for t in sorted(tensors, key=lambda t: t.offset):
        end = data_offset + t.offset + t.nbytes
        if end > file_size:
            raise GGUFError(f"tensor {t.name!r} data [{data_offset + t.offset}, {end}) extends "
                            f"past the end of the file ({file_size} bytes)")
        if t.offset < prev_end:
            raise GGUFError(f"tensor {t.name!r} at offset {t.offset} overlaps {prev_name!r}")
        prev_end, prev_name = t.offset + t.nbytes, t.name


def _alignment(metadata: dict[str, Any]) -> int:
    """Return general.alignment (default 32), which must be a power of two."""
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise GGUFError(f"general.alignment must be a positive power of two, got {value!r}")
    return value


def _read_preamble(r: _Reader) -> tuple[int, int, int]:
    """Read magic, version and counts; return (version, n_tensors, n_kv)."""
    r.what = "magic"
    magic = r.take(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file: bad magic {magic!r} (expected {GGUF_MAGIC!r})")
    r.what = "version"
    version = r.unpack(_U32)
    if version not in SUPPORTED_VERSIONS:
        hint = " (big-endian file?)" if version and not version & 0xFFFF else ""
        raise GGUFError(f"unsupported GGUF version {version}{hint}; "
                        f"supported: {SUPPORTED_VERSIONS}")
    r.what = "tensor count"
    n_tensors = r.unpack(_U64)
    r.what = "metadata key/value count"
    n_kv = r.unpack(_U64)
    if n_tensors > MAX_TENSORS:
        raise GGUFError(f"absurd tensor count {n_tensors} (limit {MAX_TENSORS})")
    if n_kv > MAX_KV:
        raise GGUFError(f"absurd metadata key/value count {n_kv} (limit {MAX_KV})")
    if n_tensors * _MIN_TENSOR_INFO + n_kv * _MIN_KV > r.remaining():
        raise GGUFError(f"{n_tensors} tensors and {n_kv} metadata entries cannot fit in the "
                        f"{r.remaining()} bytes left in the file")
    return version, n_tensors, n_kv


def _format_count(n: int) -> str:
    """Human parameter count: 950, 12K, 268M, 1.2B, 70B."""
    for unit, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= unit:
            value = n / unit
            return f"{value:.1f}{suffix}" if value < 9.95 else f"{value:.0f}{suffix}"
    return str(n)


@dataclass(frozen=True)
class GGUFInfo:
    """Parsed GGUF header: metadata, tensor directory and derived model facts."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def _int(self, key: str) -> int | None:
        """Integer value of ``key``; a per-layer array yields its maximum."""
        value = self.metadata.get(key)
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            value = max(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _arch_int(self, suffix: str) -> int | None:
        return self._int(f"{self.architecture}.{suffix}")

    @property
    def architecture(self) -> str:
        """general.architecture, or ``"unknown"`` if missing."""
        return self._str("general.architecture") or "unknown"

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def basename(self) -> str | None:
        return self._str("general.basename")

    @property
    def size_label(self) -> str | None:
        return self._str("general.size_label")

    @property
    def version_label(self) -> str | None:
        """general.version (the model's version, not the GGUF format version)."""
        return self._str("general.version")

    @property
    def file_type(self) -> int | None:
        return self._int("general.file_type")

    @property
    def quantization(self) -> str:
        """Name of general.file_type ("Q4_K_M", "F16"...), else the dominant tensor type."""
        name = LLAMA_FTYPE_NAMES.get((self.file_type or 0) & ~_LLAMA_FTYPE_GUESSED)
        if self.file_type is not None and name is not None:
            return name
        weights = [t for t in self.tensors if len(t.shape) >= 2] or list(self.tensors)
        if not weights:
            return "unknown"
        by_bytes: Counter[str] = Counter()
        for t in weights:
            by_bytes[t.type_name] += t.nbytes
        return by_bytes.most_common(1)[0][0]

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def block_count(self) -> int | None:
        return self._arch_int("block_count")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def head_count(self) -> int | None:
        return self._arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        """attention.head_count_kv, defaulting to head_count."""
        value = self._arch_int("attention.head_count_kv")
        return value if value is not None else self.head_count

    def _head_dim(self) -> int | None:
        n_embd, n_head = self.embedding_length, self.head_count
        return n_embd // n_head if n_embd and n_head else None

    @property
    def key_length(self) -> int | None:
        """attention.key_length, defaulting to embedding_length / head_count."""
        value = self._arch_int("attention.key_length")
        return value if value is not None else self._head_dim()

    @property
    def value_length(self) -> int | None:
        """attention.value_length, defaulting to embedding_length / head_count."""
        value = self._arch_int("attention.value_length")
        return value if value is not None else self._head_dim()

    @property
    def sliding_window(self) -> int | None:
        return self._arch_int("attention.sliding_window")

    @property
    def pooling_type(self) -> int | None:
        return self._arch_int("pooling_type")

    @property
    def n_params(self) -> int:
        """Total number of tensor elements."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def parameters_label(self) -> str:
        """general.size_label if present, else computed from n_params (e.g. "268M")."""
        return self.size_label or _format_count(self.n_params)

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def tensor_bytes(self) -> int:
        """Total bytes of tensor data."""
        return sum(t.nbytes for t in self.tensors)


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``.

    Raises GGUFError for malformed or unsupported files; OSError (e.g.
    FileNotFoundError) propagates unchanged.
    """
    p = Path(path)
    with open(p, "rb", buffering=0) as fp:
        file_size = os.fstat(fp.fileno()).st_size
        r = _Reader(fp, file_size)
        version, n_tensors, n_kv = _read_preamble(r)
        metadata = _read_metadata(r, n_kv)
        alignment = _alignment(metadata)
        tensors = _read_tensors(r, n_tensors, alignment)
    data_offset = -(-r.offset // alignment) * alignment
    _check_ranges(tensors, data_offset, file_size)
    return GGUFInfo(p, version, metadata, tuple(tensors), data_offset, file_size)


def read_model_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """``read_gguf_info``, refusing what parses but holds no model: a header without tensors.

    The one check the store's scan, ``models import`` and ``pull`` share, so all three refuse
    the same files with the same reason.
    """
    info = read_gguf_info(path)
    if not info.tensors:
        raise GGUFError("the file has no tensors: a GGUF header without weights is not a model")
    return info
