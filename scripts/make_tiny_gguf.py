#!/usr/bin/env python3
"""Generate tiny random-weight Llama-architecture GGUF models for fast tests.

The models are real llama.cpp models: they load in milliseconds, tokenize any
UTF-8 text (an SPM vocabulary with byte fallback, so every character that is
not a vocabulary piece becomes one ``<0xXX>`` token per UTF-8 byte) and
generate deterministic text under greedy sampling.  The weights are random, so
the text is gibberish -- but it is *reproducible* gibberish: the same
arguments always produce a byte-identical file.

The output rows of the control tokens (``<unk>``, ``<s>``, ``</s>``) are
zero, so their logits are always exactly 0 while the maximum over hundreds of
random logits is positive: greedy generation never emits EOS and always runs
until ``max_tokens``.

Usable as a module (``write_tiny_llama``) and as a CLI::

    python scripts/make_tiny_gguf.py OUT.gguf --n-embd 64 --n-layer 2 --ftype q8_0
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

import gguf
from gguf.utility import model_weight_count_rounded_notation

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "FTYPES",
    "SPECIAL_TOKENS",
    "build_vocab",
    "main",
    "write_tiny_llama",
]

SPACE = "\u2581"  # "▁", SentencePiece's word-boundary marker
SPECIAL_TOKENS: tuple[str, str, str] = ("<unk>", "<s>", "</s>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
N_BYTE_TOKENS = 256
WEIGHT_STD = 0.02
POOLING_MEAN = int(gguf.PoolingType.MEAN)

# ftype name -> (ggml type of the 2-D weights, llama.cpp LLAMA_FTYPE value)
FTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = """
the a an and or but if of to in on at by for with from as is are was were be been
it its this that these those there here he she they we you i me my your our his her
their them not no yes do does did done have has had will would can could should may
might must shall just so than then too very also only even more most some any all
each every one two three four five six seven eight nine ten first last new old good
bad big small long short high low great little own other same such what which who
when where why how about after before over under again out up down off into through
time year day week way thing man woman child world life hand part place case point
work home water room mother father number night people word story fact book eye
hello world test model token text data file line name state system program question
say said get got make made go went know knew take took see saw come came think look
want give use find tell ask seem feel try leave call run read write play move live
hello llama home daemon chat stream server request response
""".split()

_CAPITALIZED = ["The", "A", "It", "This", "He", "She", "They", "We", "You", "I", "In",
                "Hello", "World", "Llama", "What", "How", "Why", "When", "Yes", "No"]

_SUFFIXES = ["s", "es", "ed", "er", "ers", "ing", "ly", "ion", "tion", "ment", "ness",
             "'s", "'t", "'re", "'ll", "'ve", "n't"]


def _with_prefixes(piece: str) -> Iterator[str]:
    """Yield every non-empty prefix of ``piece`` (shortest first).

    SPM tokenization only ever merges two adjacent pieces into a piece that is
    in the vocabulary, so a long piece is reachable only through a chain of
    shorter ones; including every prefix guarantees such a chain exists.
    """
    for end in range(1, len(piece) + 1):
        yield piece[:end]


def _padding_pieces() -> Iterator[str]:
    """Yield lowercase pieces ``aa``, ``ab``, ... ``aaa``, ... (prefix-closed)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for length in itertools.count(2):
        for combo in itertools.product(letters, repeat=length):
            yield "".join(combo)


def _ordinary_pieces() -> list[str]:
    """Return the natural list of ordinary (non-special, non-byte) pieces."""
    pieces: dict[str, None] = {SPACE: None}
    for code in range(33, 127):  # printable ASCII except space
        pieces[chr(code)] = None
    words = list(dict.fromkeys(_WORDS + _CAPITALIZED))
    for word in words:
        for candidate in (SPACE + word, word):
            pieces.update(dict.fromkeys(_with_prefixes(candidate)))
    for suffix in _SUFFIXES:
        pieces.update(dict.fromkeys(_with_prefixes(suffix)))
    return list(pieces)


def build_vocab(vocab_size: int | None = None) -> tuple[list[str], list[float], list[int]]:
    """Build the SPM vocabulary: ``(tokens, scores, token_types)``.

    Layout: ``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens ``<0x00>``..``<0xFF>``,
    then ordinary pieces.  ``vocab_size=None`` gives the natural size; a larger
    size is padded with lowercase letter pieces, a smaller one truncates the
    ordinary pieces (it must be at least 3 + 256).
    """
    minimum = len(SPECIAL_TOKENS) + N_BYTE_TOKENS
    ordinary = _ordinary_pieces()
    if vocab_size is not None:
        if vocab_size < minimum:
            raise ValueError(f"vocab_size must be >= {minimum}, got {vocab_size}")
        want = vocab_size - minimum
        present = set(ordinary)
        extra = (p for p in _padding_pieces() if p not in present)
        ordinary = ordinary[:want] + list(itertools.islice(extra, max(0, want - len(ordinary))))
    tokens = list(SPECIAL_TOKENS) + [f"<0x{b:02X}>" for b in range(N_BYTE_TOKENS)] + ordinary
    scores = [0.0] * minimum + [-float(i) for i in range(len(ordinary))]
    types = ([int(gguf.TokenType.UNKNOWN)] + [int(gguf.TokenType.CONTROL)] * 2
             + [int(gguf.TokenType.BYTE)] * N_BYTE_TOKENS
             + [int(gguf.TokenType.NORMAL)] * len(ordinary))
    return tokens, scores, types


def _tensor_shapes(n_embd: int, n_layer: int, n_head: int, n_kv_head: int,
                   n_ff: int, n_vocab: int) -> dict[str, tuple[int, ...]]:
    """Return numpy shapes (rows, cols) of every tensor; ggml order is reversed."""
    head_dim = n_embd // n_head
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (n_vocab, n_embd)}
    for i in range(n_layer):
        blk = f"blk.{i}."
        shapes[blk + "attn_norm.weight"] = (n_embd,)
        shapes[blk + "attn_q.weight"] = (n_head * head_dim, n_embd)
        shapes[blk + "attn_k.weight"] = (n_kv_head * head_dim, n_embd)
        shapes[blk + "attn_v.weight"] = (n_kv_head * head_dim, n_embd)
        shapes[blk + "attn_output.weight"] = (n_embd, n_head * head_dim)
        shapes[blk + "ffn_norm.weight"] = (n_embd,)
        shapes[blk + "ffn_gate.weight"] = (n_ff, n_embd)
        shapes[blk + "ffn_up.weight"] = (n_ff, n_embd)
        shapes[blk + "ffn_down.weight"] = (n_embd, n_ff)
    shapes["output_norm.weight"] = (n_embd,)
    shapes["output.weight"] = (n_vocab, n_embd)
    return shapes


def _random_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Create float32 weights: norms are ones, matrices N(0, WEIGHT_STD)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            tensors[name] = (rng.standard_normal(shape) * WEIGHT_STD).astype(np.float32)
    tensors["output.weight"][[UNK_ID, BOS_ID, EOS_ID], :] = 0.0  # greedy never picks them
    return tensors


def _encode(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Convert a float32 weight to ``qtype`` (1-D tensors always stay F32)."""
    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array
    return gguf.quants.quantize(array, qtype)


def _validate(n_embd: int, n_head: int, n_kv_head: int, n_ff: int, ftype: str) -> None:
    """Reject hyperparameters llama.cpp (or the chosen quantization) cannot use."""
    if ftype not in FTYPES:
        raise ValueError(f"ftype must be one of {sorted(FTYPES)}, got {ftype!r}")
    if n_embd % n_head or (n_embd // n_head) % 2:
        raise ValueError("n_embd must be divisible by n_head with an even head size")
    if n_head % n_kv_head:
        raise ValueError("n_head must be a multiple of n_kv_head")
    block = gguf.GGML_QUANT_SIZES[FTYPES[ftype][0]][0]
    if n_embd % block or n_ff % block:
        raise ValueError(f"{ftype} needs n_embd and n_ff divisible by {block}")


def _add_metadata(writer: gguf.GGUFWriter, *, name: str, size_label: str, ftype: str,
                  n_ctx: int, n_embd: int, n_layer: int, n_ff: int, n_head: int,
                  n_kv_head: int, n_vocab: int, pooling: bool) -> None:
    """Write general.* and llama.* hyperparameter keys."""
    writer.add_name(name)
    writer.add_basename(name)
    writer.add_size_label(size_label)
    writer.add_file_type(int(FTYPES[ftype][1]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)


def _add_tokenizer(writer: gguf.GGUFWriter, tokens: Sequence[str], scores: Sequence[float],
                   types: Sequence[int], chat_template: str | None) -> None:
    """Write the SPM ("llama") tokenizer keys and the optional chat template."""
    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def write_tiny_llama(path: str | os.PathLike[str], *, n_embd: int = 64, n_layer: int = 2,
                     n_head: int = 4, n_kv_head: int = 2, n_ff: int = 128, n_ctx: int = 256,
                     vocab_size: int | None = None, ftype: str = "f32", seed: int = 0,
                     name: str = "tiny-llama", chat_template: str | None = None,
                     pooling: bool = False) -> Path:
    """Write a tiny random Llama GGUF model to ``path`` and return it as a Path.

    ``vocab_size=None`` uses the natural vocabulary (see ``build_vocab``).
    ``ftype`` is ``"f32"``, ``"f16"`` or ``"q8_0"`` (2-D weights only; norms
    stay F32).  ``pooling=True`` writes ``llama.pooling_type = MEAN``.  The
    file is written to a temporary name and atomically renamed, so concurrent
    test workers never see a half-written model.
    """
    _validate(n_embd, n_head, n_kv_head, n_ff, ftype)
    tokens, scores, types = build_vocab(vocab_size)
    shapes = _tensor_shapes(n_embd, n_layer, n_head, n_kv_head, n_ff, len(tokens))
    tensors = _random_tensors(shapes, seed)
    n_params = sum(int(t.size) for t in tensors.values())
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    _add_metadata(writer, name=name, size_label=model_weight_count_rounded_notation(n_params),
                  ftype=ftype, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff,
                  n_head=n_head, n_kv_head=n_kv_head, n_vocab=len(tokens), pooling=pooling)
    _add_tokenizer(writer, tokens, scores, types, chat_template)
    qtype = FTYPES[ftype][0]
    for tensor_name, array in tensors.items():
        encoded = _encode(array, qtype)
        raw = None if encoded is array else qtype
        writer.add_tensor(tensor_name, encoded, raw_dtype=raw)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output .gguf path")
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-kv-head", type=int, default=2)
    p.add_argument("--n-ff", type=int, default=128)
    p.add_argument("--n-ctx", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--ftype", choices=sorted(FTYPES), default="f32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="tiny-llama")
    p.add_argument("--chat-template", action="store_true",
                   help="embed a ChatML-style tokenizer.chat_template")
    p.add_argument("--pooling", action="store_true", help="write llama.pooling_type = MEAN")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: write the model and print its path and size."""
    args = _parse_args(argv)
    try:
        out = write_tiny_llama(
            args.out, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
            n_kv_head=args.n_kv_head, n_ff=args.n_ff, n_ctx=args.n_ctx,
            vocab_size=args.vocab_size, ftype=args.ftype, seed=args.seed, name=args.name,
            chat_template=DEFAULT_CHAT_TEMPLATE if args.chat_template else None,
            pooling=args.pooling)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
