"""The continuous-batching engine: llama.cpp's low-level API, many sequences per decode step.

One ``llama_context`` with ``n_slots`` sequence ids (slots). Every step builds one
``llama_batch``: one decode token for each live sequence that has a sampled token to feed, then
prompt chunks of sequences still in prefill (chunked prefill: a long prompt spreads over several
steps, so running sequences keep decoding), at most ``n_batch`` tokens in all. After the one
``llama_decode`` each sequence whose output was requested samples with its own sampler chain,
and all events of the step leave in one ``emit`` call.

Config keys (besides ``model_path, n_ctx, n_batch, n_threads, n_gpu_layers``):

* ``n_slots`` (default 4): sequences decoded in parallel; more submissions wait in a queue.
* ``kv_unified`` (default True): ``n_ctx`` is the total KV size, shared by all slots; one sequence
  may use up to all of it (``n_ctx_seq == n_ctx``), so several long sequences can fill the cache
  together (then cached idle prefixes are dropped first, prefill is deferred next, and last the
  sequence holding the most KV fails with ``server_busy``). With False each slot owns
  ``n_ctx / n_slots`` (llama.cpp may round that up to a multiple of 256).
* ``n_ubatch`` (default ``min(n_batch, 512)``), ``prompt_cache`` (default True), ``verbose``.
* ``flash_attn`` (default None: llama.cpp's auto, on for CPU; ``Llama`` uses False), ``repack``
  (default True: llama.cpp's repacked CPU weights), ``swa_full`` (default True: a full-size
  sliding-window cache, which the prompt cache can cut back; False saves memory on Gemma 3).

Prompt cache: a finished sequence's tokens stay in its slot's KV; a new request takes the free
slot with the longest common token prefix, keeps that prefix (``llama_memory_seq_rm`` from it)
and reports ``"cache": {"hit_tokens": N}`` in its ``done`` event. Where partial removal is
refused (or an SWA cache no longer holds the window before the prefix) the slot is cleared.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamahomed.engine.inbox import Inbox, SequenceState
from llamahomed.engine.detok import TextOutput, text_event
from llamahomed.engine.protocol import SamplingParams
from llamahomed.engine.sampling import SamplerChain, resolve_seed

Event = dict[str, Any]
Emit = Callable[[list[Event]], None]
PIECE_BUFFER = 256


@dataclass(eq=False)
class BatchedSequence(SequenceState):
    """One request: its prompt, where it stands in its slot's KV, and its stream state."""

    slot: int = -1
    n_past: int = 0            # tokens of ``history`` whose KV is in the slot
    feeding: int = 0           # tokens of ``history`` in the batch being decoded
    pending: int | None = None  # sampled token to feed at the next step
    cache_hit: int = 0
    history: list[int] = field(default_factory=list)
    sampler: SamplerChain | None = None


@dataclass
class Slot:
    """A llama.cpp sequence id: the sequence using it, or the tokens its KV still holds."""

    index: int
    seq: BatchedSequence | None = None
    cached: list[int] = field(default_factory=list)
    last_used: float = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BatchedEngine(Inbox[BatchedSequence]):
    """Owns the model, one context and one batch; ``run()`` is the decode thread's loop."""

    def __init__(self, lib: Any, model: Any, ctx: Any, config: dict[str, Any], emit: Emit) -> None:
        super().__init__(emit)
        self._lib, self._model, self._ctx = lib, model, ctx
        self._mem = lib.llama_get_memory(ctx)
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.n_ctx, self.n_ctx_seq = int(lib.llama_n_ctx(ctx)), int(lib.llama_n_ctx_seq(ctx))
        self.n_batch, self.n_slots = int(lib.llama_n_batch(ctx)), int(lib.llama_n_seq_max(ctx))
        self.n_threads = int(config["n_threads"])
        self.kv_unified = bool(config.get("kv_unified", True))
        self.prompt_cache = bool(config.get("prompt_cache", True))
        self._n_swa = max(1, int(lib.llama_model_n_swa(model)))
        self._batch = lib.llama_batch_init(self.n_batch, 0, self.n_slots)
        # Array views on the batch's own buffers: written in place (slices too), never copied.
        array = ctypes.c_int32 * self.n_batch
        self._b_token: Any = array.from_address(ctypes.addressof(self._batch.token.contents))
        self._b_pos: Any = array.from_address(ctypes.addressof(self._batch.pos.contents))
        self._b_logits: Any = (ctypes.c_int8 * self.n_batch).from_address(
            ctypes.addressof(self._batch.logits.contents))
        self._b_seq = [self._batch.seq_id[i] for i in range(self.n_batch)]
        for i in range(self.n_batch):
            self._batch.n_seq_id[i] = 1
        self._piece = ctypes.create_string_buffer(PIECE_BUFFER)
        self._slots = [Slot(i) for i in range(self.n_slots)]
        self._live: list[BatchedSequence] = []
        self.kv_usage = 0.0
        self._closed = False

    @classmethod
    def load(cls, config: dict[str, Any], emit: Emit) -> BatchedEngine:
        """Load the model and create a context with ``n_slots`` sequences (see module doc)."""
        import llama_cpp as lib

        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if config.get("verbose") else logging.ERROR)
        lib.llama_backend_init()
        n_slots = int(config.get("n_slots", 4))
        if not 1 <= n_slots <= 256:
            raise ValueError(f"n_slots must be between 1 and 256, not {n_slots}")
        n_batch = max(int(config.get("n_batch", 512)), n_slots)
        n_threads = int(config.get("n_threads") or max(multiprocessing.cpu_count() // 2, 1))
        model_params = lib.llama_model_default_params()
        n_gpu = int(config.get("n_gpu_layers", 0))
        model_params.n_gpu_layers = 0x7FFFFFFF if n_gpu < 0 else n_gpu
        model_params.use_extra_bufts = bool(config.get("repack", True))
        model = lib.llama_model_load_from_file(str(config["model_path"]).encode(), model_params)
        if not model:
            raise ValueError(f"llama.cpp could not load the model at {config['model_path']}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max = int(config["n_ctx"]), n_batch, n_slots
        params.n_ubatch = min(n_batch, int(config.get("n_ubatch", 512)))
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = bool(config.get("kv_unified", True))
        params.swa_full = bool(config.get("swa_full", True))
        flash_attn = config.get("flash_attn")
        if flash_attn is not None:
            params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            lib.llama_model_free(model)
            raise ValueError("llama.cpp could not create a context (out of memory?)")
        return cls(lib, model, ctx, {**config, "n_threads": n_threads}, emit)

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, "n_ctx_seq": self.n_ctx_seq,
                "n_ctx_train": int(self._lib.llama_model_n_ctx_train(self._model)),
                "n_vocab": self.n_vocab, "n_threads": self.n_threads, "n_batch": self.n_batch,
                "n_ubatch": int(self._lib.llama_n_ubatch(self._ctx)), "n_slots": self.n_slots,
                "kv_unified": self.kv_unified, "prompt_cache": self.prompt_cache,
                "engine": "batched"}

    # -- called from the reader thread -------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` with BOS as the vocab wants it, special tokens not parsed."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buffer = (ctypes.c_int32 * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, size, True, False)
        if n < 0:
            size = -n
            buffer = (ctypes.c_int32 * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, size, True, False)
        return list(buffer[:n])

    def submit(self, seq_id: int, prompt: str, params: SamplingParams) -> None:
        """Tokenize and check the prompt at once, then queue it (or answer with an error)."""
        tokens = self.tokenize(prompt)
        self._accept(seq_id, tokens, self.n_ctx_seq,
                     lambda: BatchedSequence(seq_id, tokens, params, out=TextOutput(params.stop)))

    # -- the decode thread --------------------------------------------------------------------
    def run(self) -> None:
        """Step until ``stop()``; block while there is nothing to do. Frees llama.cpp at exit.

        Only a clean stop frees: after an unexpected error (the daemon's socket gone) the reader
        thread may still be tokenizing with the model's vocab.
        """
        while self._next_step():
            pass
        self.close()

    def _next_step(self) -> bool:
        with self._cond:
            while not self._stopping and not self._live and not self._queue:
                self._cond.wait()
            if self._stopping:
                return False
            cancelled, self._cancelled = self._cancelled, set()
            events = [self._finish(s, "cancelled") for s in self._queue if s.seq_id in cancelled]
            if events:
                self._queue = collections.deque(
                    s for s in self._queue if s.seq_id not in cancelled)
            for seq in [s for s in self._live if s.seq_id in cancelled]:
                events.append(self._finish(seq, "cancelled"))
            while self._queue and len(self._live) < self.n_slots:
                self._admit(self._queue.popleft())
        if self._live:
            try:
                self._step(events)
            except Exception as exc:  # noqa: BLE001 - a failed step fails its sequences only
                events += [self._fail(s, "internal_error", f"decode step failed: {exc}")
                           for s in list(self._live)]
        # KV cells held by running sequences (vllm:kv_cache_usage_perc); the worker's channel
        # reads it when it sends this step's frame.
        self.kv_usage = round(sum(s.n_past for s in self._live) / max(1, self.n_ctx), 4)
        if events:
            self._emit(events)
        return True

    def _admit(self, seq: BatchedSequence) -> None:
        """Give ``seq`` the free slot whose cached tokens share its longest prefix."""
        free = [slot for slot in self._slots if slot.seq is None]
        scored = [(_common_prefix(slot.cached, seq.tokens) if self.prompt_cache else 0,
                   -slot.last_used, slot) for slot in free]
        keep, _, slot = max(scored, key=lambda item: (item[0], item[1]))
        keep = self._reuse(slot, min(keep, len(seq.tokens) - 1))
        slot.seq, slot.cached = seq, []
        seq.slot, seq.n_past, seq.cache_hit = slot.index, keep, keep
        seq.history = list(seq.tokens)
        seq.started = time.perf_counter()
        seq.sampler = SamplerChain(self._lib, seq.params, self.n_vocab,
                                   resolve_seed(seq.params.seed), seq.tokens)
        self._live.append(seq)

    def _reuse(self, slot: Slot, keep: int) -> int:
        """Cut the slot's KV back to its first ``keep`` tokens; 0 where that is not possible."""
        lib, mem = self._lib, self._mem
        if keep > 0:
            window_start = lib.llama_memory_seq_pos_min(mem, slot.index)
            if not 0 <= window_start <= max(0, keep - self._n_swa) or \
                    not lib.llama_memory_seq_rm(mem, slot.index, keep, -1):
                keep = 0
        if keep == 0:
            lib.llama_memory_seq_rm(mem, slot.index, -1, -1)
        return keep

    def _step(self, events: list[Event]) -> None:
        """One ``llama_decode`` over every live sequence, then sample where outputs came out."""
        outputs = self._decode(events)
        if outputs is None:
            return
        for seq in self._live:
            seq.n_past += seq.feeding
            seq.feeding = 0
            seq.pending = None
        for seq, index in outputs:
            assert seq.sampler is not None
            events += self._on_token(seq, seq.sampler.sample(self._ctx, index))

    def _decode(self, events: list[Event]) -> list[tuple[BatchedSequence, int]] | None:
        """Fill the batch and decode it; the outputs to sample, or None when nothing ran.

        Where the KV cache has no room (``llama_decode`` returns 1 and restores the cache):
        drop idle prompt-cache KV, else defer prefill chunks, else fail the sequence holding
        the most KV; each retry removes something, so this never loops for ever.
        """
        prefill = True
        while self._live:
            outputs = self._fill_batch(prefill)
            if self._batch.n_tokens == 0:
                return None
            rc = self._lib.llama_decode(self._ctx, self._batch)
            if rc == 0:
                return outputs
            if rc != 1:  # aborted, invalid batch or fatal: fail what was in the batch
                events += [self._fail(s, "internal_error", f"llama_decode returned {rc}")
                           for s in [s for s in self._live if s.feeding]]
                return None
            if self._evict_idle():
                continue
            if prefill and any(s.pending is not None for s in self._live):
                prefill = False
                continue
            victim = max(self._live, key=lambda s: s.n_past)
            events.append(self._fail(victim, "server_busy",
                                     "the shared KV cache is full; retry the request"))
        return None

    def _fill_batch(self, prefill: bool) -> list[tuple[BatchedSequence, int]]:
        """Write decode tokens, then prompt chunks, into the batch; the outputs to sample."""
        outputs: list[tuple[BatchedSequence, int]] = []
        n = 0
        for seq in self._live:
            seq.feeding = 0
            if seq.pending is not None:
                self._b_token[n], self._b_pos[n], self._b_logits[n] = seq.pending, seq.n_past, 1
                self._b_seq[n][0] = seq.slot
                outputs.append((seq, n))
                seq.feeding, n = 1, n + 1
        for seq in self._live if prefill else ():
            start = seq.n_past
            end = min(len(seq.tokens), start + self.n_batch - n)
            if seq.pending is not None or end <= start:
                continue
            k = end - start
            self._b_token[n:n + k] = seq.tokens[start:end]
            self._b_pos[n:n + k] = range(start, end)
            self._b_logits[n:n + k] = [0] * k
            for j in range(n, n + k):
                self._b_seq[j][0] = seq.slot
            seq.feeding, n = k, n + k
            if end == len(seq.tokens):
                self._b_logits[n - 1] = 1
                outputs.append((seq, n - 1))
        self._batch.n_tokens = n
        return outputs

    def _evict_idle(self) -> bool:
        """Drop the prompt-cache KV of every free slot; whether there was any."""
        held = [slot for slot in self._slots if slot.seq is None and slot.cached]
        for slot in held:
            self._lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)
            slot.cached, slot.last_used = [], 0.0
        return bool(held)

    def _on_token(self, seq: BatchedSequence, token: int) -> list[Event]:
        """Account for a sampled token: its text, then whether the sequence ends here."""
        if not seq.first_token:
            seq.first_token = time.perf_counter()
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return self._end(seq, "stop")
        seq.generated += 1
        seq.history.append(token)
        text, stopped = seq.out.feed(self._token_bytes(token))
        events: list[Event] = [text_event(seq.seq_id, text, 1)] if text else []
        if stopped:
            return events + [self._finish(seq, "stop")]
        room = self.n_ctx_seq - len(seq.tokens) - seq.generated
        if seq.generated >= seq.params.max_tokens or room <= 0:
            return events + self._end(seq, "length")
        seq.pending = token
        return events

    def _token_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, PIECE_BUFFER, 0, False)
        if n < 0:  # a piece longer than the buffer: rare, so a one-off buffer
            big = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
            return big.raw[:n]
        return self._piece.raw[:n]

    def _end(self, seq: BatchedSequence, reason: str) -> list[Event]:
        """Flush held-back text, then finish."""
        tail = seq.out.flush()
        events: list[Event] = [text_event(seq.seq_id, tail, 0)] if tail else []
        return events + [self._finish(seq, reason)]

    def _finish(self, seq: BatchedSequence, reason: str) -> Event:
        self._release(seq, keep_cache=True)
        return {"seq": seq.seq_id, "kind": "done", "finish_reason": reason,
                "usage": seq.usage(), "timings": seq.timings(),
                "cache": {"hit_tokens": seq.cache_hit}}

    def _fail(self, seq: BatchedSequence, code: str, message: str) -> Event:
        self._release(seq, keep_cache=False)
        return {"seq": seq.seq_id, "kind": "error", "code": code, "message": message,
                "details": {"prompt_tokens": len(seq.tokens), "completion_tokens": seq.generated}}

    def _release(self, seq: BatchedSequence, keep_cache: bool) -> None:
        """Take ``seq`` out of its slot; keep the slot's KV as prompt cache or clear it."""
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        if seq in self._live:
            self._live.remove(seq)
        if seq.slot < 0:
            return
        slot = self._slots[seq.slot]
        slot.seq, slot.last_used = None, time.perf_counter()
        if keep_cache and self.prompt_cache and seq.n_past > 0:
            slot.cached = seq.history[:seq.n_past]
        else:
            self._lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)
            slot.cached = []

    def close(self) -> None:
        """Free samplers, batch, context and model (idempotent; after ``run`` returned)."""
        if self._closed:
            return
        self._closed = True
        for seq in self._live:
            if seq.sampler is not None:
                seq.sampler.close()
        self._live.clear()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)
