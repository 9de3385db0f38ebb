"""Per-step sampling cost on one logits row: the engine's SamplerChain against llama.cpp's chain.

    .venv/bin/python scripts/bench_sampling.py [--model PATH] [--steps 300]

Loads the model (default: the embedded Gemma, 262,144-token vocabulary), decodes a prompt once,
then times ``SamplerChain.sample`` (bias/penalties in numpy, chain on the top-k) and
``llama_sampler_sample`` over llama.cpp's whole chain (penalties -> top_k -> top_p -> min_p ->
temp -> dist, as llama-server's sampler) on that row, for greedy, greedy + repeat_penalty 1.1 and
the daemon's default sampling. Prints microseconds per step (median of ``--steps``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llamahomed.engine.protocol import SamplingParams  # noqa: E402
from llamahomed.engine.worker.sampling import SamplerChain  # noqa: E402

MODES = {
    "greedy": SamplingParams(temperature=0.0, repeat_penalty=1.0),
    "greedy+repeat1.1": SamplingParams(temperature=0.0, repeat_penalty=1.1),
    "default (t0.7 k40 p0.95 minp0.05 r1.1)": SamplingParams(),
}


def llama_chain(params: SamplingParams, n_vocab: int) -> object:
    lib = llama_cpp
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
    add(lib.llama_sampler_init_penalties(n_vocab, 64, params.repeat_penalty, 0.0, 0.0))
    if params.temperature <= 0:
        add(lib.llama_sampler_init_greedy())
        return chain
    add(lib.llama_sampler_init_top_k(params.top_k))
    add(lib.llama_sampler_init_top_p(params.top_p, 1))
    add(lib.llama_sampler_init_min_p(params.min_p, 1))
    add(lib.llama_sampler_init_temp(params.temperature))
    add(lib.llama_sampler_init_dist(1))
    return chain


def timed(fn: object, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter_ns()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    path = args.model
    if path is None:
        from llamahomed.registry.default_model import install_default_model
        path = install_default_model(Path(tempfile.mkdtemp()))
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(),
                                                 llama_cpp.llama_model_default_params())
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads = 512, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    raw = b"The quick brown fox jumps over the lazy dog and then"
    buf = (llama_cpp.llama_token * 64)()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, 64, True, False)
    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(buf, n)) == 0
    prompt = list(buf[:n])
    print(f"{path.name}: n_vocab {n_vocab}, median us per sampled token over {args.steps} steps")
    for name, params in MODES.items():
        ours = SamplerChain(llama_cpp, params, n_vocab, 1, prompt, vocab)
        theirs = llama_chain(params, n_vocab)
        for token in prompt[-64:]:
            llama_cpp.llama_sampler_accept(theirs, token)
        a = timed(lambda: ours.sample(ctx, -1), args.steps)
        b = timed(lambda: llama_cpp.llama_sampler_sample(theirs, ctx, -1), args.steps)
        print(f"  {name:42s} SamplerChain {a:8.1f}   llama.cpp chain {b:8.1f}   ratio {b / a:5.1f}x")
        ours.close()
        llama_cpp.llama_sampler_free(theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
