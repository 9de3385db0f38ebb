"""The continuous-batching engine: llama.cpp's low-level API, many sequences per decode step.

One ``llama_context`` with ``n_slots`` sequence ids (slots). Every step builds one
``llama_batch``: one decode token for each live sequence that has a sampled token to feed, then
prompt chunks of sequences still in prefill (chunked prefill: a long prompt spreads over several
steps, so running sequences keep decoding), at most ``n_batch`` tokens in all, and while some
sequence decodes at most what keeps the step within ``prefill_step_ratio`` times a decode-only
step (``prefill_budget.py``). After the one
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
* ``state_cache_bytes`` (default 0: off): RAM for prompt-cache prefixes evicted from the KV.
* ``speculative`` ("ngram" or "off"), ``draft_max``: prompt-lookup drafts fed behind a decoding
  sequence's next token and verified with its own sampler chain (``speculate.py``); a batch
  the KV cache has no room for is retried without drafts first.
* ``flash_attn`` (default None: llama.cpp's auto, on for CPU; ``Llama`` uses False), ``repack``
  (default True: llama.cpp's repacked CPU weights), ``swa_full`` (default True: a full-size
  sliding-window cache, which the prompt cache can cut back; False saves memory on Gemma 3).

Prompt cache: a finished sequence's tokens stay in its slot's KV; a new request takes the free
slot with the longest common token prefix and keeps that prefix (``llama_memory_seq_rm`` from
it). A live sequence's computed prefix is shared instead where it is longer
(``llama_memory_seq_cp``), and prefixes that a slot had to drop are kept as saved sequence
state in RAM, up to ``state_cache_bytes`` (``system_settings.cache_size``; see
``state_cache.py``), and restored from there. The ``done`` event reports
``"cache": {"hit_tokens": N, "source": "slot" | "shared" | "ram" | ""}``. Where partial removal
is refused (or an SWA cache no longer holds the window before the prefix) the slot is cleared.

Siblings (``n`` choices of one prompt, one submit with several sequence ids): the first is the
leader and prefills the prompt; siblings admitted while it prefills wait in their slots without
decoding anything. When the leader's last prompt token is decoded, each waiting sibling gets the
prompt's KV with ``llama_memory_seq_cp(leader, sibling, -1, -1)`` (hit_tokens = the whole
prompt, source "shared") and samples its first token from the leader's logits with its own
sampler chain, so the prompt is decoded once. The whole-sequence copy is what llama.cpp also
allows across per-slot KV streams (``kv_unified`` False: it copies the stream's buffer, which
then holds exactly the prompt), so siblings share there too. A sibling that gets a slot only
after the leader's prefill is admitted like any other sequence (a live sibling's prefix, the
slot or RAM cache: at most the prompt less one token, which it decodes for its logits; with
``kv_unified`` False only the slot and RAM caches can serve it). A leader that is cancelled
before its prefill ends hands its computed prefix and its waiting siblings to the first of
them; a failed one leaves them to prefill for themselves. Cells that ``seq_cp`` shared carry
every sibling's sequence id, so a sibling ending (and its slot being cleared) keeps them for
the others.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.protocol import Done, Failed, Prompt, SamplingParams, Text
from llamahomed.engine.worker.detok import TextOutput
from llamahomed.engine.worker.embed import Embedder
from llamahomed.engine.worker.inbox import (
    Inbox,
    SequenceState,
    sibling_params,
    special_tokens,
    tokenize,
)
from llamahomed.engine.grammar import GrammarError
from llamahomed.engine.worker.sampling import (
    SamplerChain,
    invalid_params,
    params_problem,
    prompt_problem,
    resolve_seed,
)
from llamahomed.engine.worker.logprobs import LogprobTrail, entry
from llamahomed.engine.worker.prefill_budget import SHORT_PROMPT, PrefillBudget
from llamahomed.engine.worker.speculate import DRAFT_WIDTH, DraftStats, Drafter, verify
from llamahomed.engine.worker.state_cache import SavedState, StateCache, common_prefix

Event = dict[str, Any]
Emit = Callable[[list[Event]], None]
PIECE_BUFFER = 256
MIN_SAVED_TOKENS = 32  # shorter prefixes prefill faster than a state round trip pays back


@dataclass(eq=False)
class BatchedSequence(SequenceState):
    """One request: its prompt, where it stands in its slot's KV, and its stream state."""

    slot: int = -1
    n_past: int = 0            # tokens of ``history`` whose KV is in the slot
    feeding: int = 0           # tokens of ``history`` in the batch being decoded
    pending: int | None = None  # sampled token to feed at the next step
    cache_hit: int = 0
    cache_source: str = ""     # where the reused prefix came from: slot, shared or ram
    history: list[int] = field(default_factory=list)
    sampler: SamplerChain | None = None
    leader: BatchedSequence | None = None  # the sibling whose prefill this one waits for
    followers: list[BatchedSequence] = field(default_factory=list)  # siblings waiting for ours
    drafter: Drafter | None = None  # prompt-lookup drafts (``speculate.py``), where enabled
    draft: list[int] = field(default_factory=list)  # drafted tokens in the batch being decoded
    kv_end: int = 0            # positions in the slot's KV, drafts not yet verified included
    trail: LogprobTrail | None = None  # logprobs of tokens whose text is held back, if asked


@dataclass
class Slot:
    """A llama.cpp sequence id: the sequence using it, or the tokens its KV still holds."""

    index: int
    seq: BatchedSequence | None = None
    cached: list[int] = field(default_factory=list)
    prompt_len: int = 0        # prompt tokens of the sequence that left ``cached`` behind
    last_used: float = 0.0


def _device_placement(lib: Any, config: LoadConfig, model_params: Any) -> Any:
    """Set ``devices`` and ``tensor_split`` from the plan (RPC hosts registered first)."""
    if not config.devices:
        return None
    from llamahomed.engine.rpc import resolve_devices

    devices = resolve_devices(config.rpc_servers, config.devices)
    dev_array = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
    split = (ctypes.c_float * max(int(lib.llama_max_devices()), len(devices)))(*config.tensor_split)
    model_params.devices = ctypes.addressof(dev_array)
    model_params.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
    return dev_array, split


def kv_ggml_type(lib: Any, name: str) -> int:
    """The ggml type id of a KV cache type name ("f16", "q8_0", "q4_0")."""
    value = getattr(lib, f"GGML_TYPE_{name.upper()}", None)
    if value is None:
        raise ValueError(f"unknown KV cache type {name!r}")
    return int(value)


class BatchedEngine(Inbox[BatchedSequence]):
    """Owns the model, one context and one batch; ``run()`` is the decode thread's loop."""

    def __init__(self, lib: Any, model: Any, ctx: Any, config: LoadConfig, emit: Emit) -> None:
        super().__init__(emit)
        self._lib, self._model, self._ctx = lib, model, ctx
        self._mem = lib.llama_get_memory(ctx)
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.n_ctx, self.n_ctx_seq = int(lib.llama_n_ctx(ctx)), int(lib.llama_n_ctx_seq(ctx))
        self.n_batch, self.n_slots = int(lib.llama_n_batch(ctx)), int(lib.llama_n_seq_max(ctx))
        self.n_threads = int(config.n_threads or 1)
        self.kv_unified = config.kv_unified
        self.prompt_cache = config.prompt_cache
        state_bytes = config.state_cache_bytes
        self._saved = StateCache(state_bytes) if self.prompt_cache and state_bytes > 0 else None
        self._swa = int(lib.llama_model_n_swa(model)) > 0
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
        self._budget = PrefillBudget(self.n_batch, config.prefill_step_ratio)
        self._filled = (0, 0)  # decode tokens, prompt tokens of the batch being filled
        self.draft_max = config.draft_max if config.speculative == "ngram" else 0
        if lib.llama_model_is_recurrent(model) or lib.llama_model_is_hybrid(model):
            self.draft_max = 0  # their state cannot drop a rejected draft's positions
        self.draft_stats = DraftStats()  # every sequence's drafts together
        self.kv_usage = 0.0
        self._closed = False

    @classmethod
    def load(cls, wire: LoadConfig | Mapping[str, Any], emit: Emit) -> BatchedEngine:
        """Load the model and create a context with ``n_slots`` sequences (see module doc)."""
        import llama_cpp as lib

        config = LoadConfig.from_wire(wire)
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if config.verbose else logging.ERROR)
        lib.llama_backend_init()
        n_slots = config.n_slots
        n_batch = max(config.n_batch, n_slots)
        n_threads = config.n_threads or max(multiprocessing.cpu_count() // 2, 1)
        model_params = lib.llama_model_default_params()
        n_gpu = config.n_gpu_layers
        model_params.n_gpu_layers = 0x7FFFFFFF if n_gpu < 0 else n_gpu
        model_params.use_extra_bufts = config.repack
        placement = _device_placement(lib, config, model_params)  # kept alive while loading
        model = lib.llama_model_load_from_file(config.model_path.encode(), model_params)
        del placement
        if not model:
            raise ValueError(f"llama.cpp could not load the model at {config.model_path}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max = config.n_ctx, n_batch, n_slots
        params.n_ubatch = min(n_batch, config.n_ubatch)
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = config.kv_unified
        params.type_k = params.type_v = kv_ggml_type(lib, config.kv_type)
        params.swa_full = config.swa_full
        flash_attn = config.flash_attn
        if flash_attn is not None:
            params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            lib.llama_model_free(model)
            raise ValueError("llama.cpp could not create a context (out of memory?)")
        return cls(lib, model, ctx, config.model_copy(update={"n_threads": n_threads}), emit)

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, "n_ctx_seq": self.n_ctx_seq,
                "n_ctx_train": int(self._lib.llama_model_n_ctx_train(self._model)),
                "n_vocab": self.n_vocab, "n_threads": self.n_threads, "n_batch": self.n_batch,
                "n_ubatch": int(self._lib.llama_n_ubatch(self._ctx)), "n_slots": self.n_slots,
                "kv_unified": self.kv_unified, "prompt_cache": self.prompt_cache,
                "state_cache_bytes": self._saved.capacity if self._saved else 0,
                "draft_max": self.draft_max,
                "engine": "batched", **special_tokens(self._lib, self._vocab)}

    def embedder(self) -> Embedder:
        """Embeddings on this model through a context of its own (see ``embed.py``)."""
        return Embedder(self._lib, self._model, self.n_ctx_seq, self.n_threads)

    # -- called from the reader thread -------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Tokens of ``text`` with BOS as the vocab wants it; special tokens parsed if asked."""
        return tokenize(self._lib, self._vocab, text, special)

    def submit(self, seq_id: int, prompt: Prompt, params: SamplingParams, special: bool = False,
               siblings: Sequence[int] = ()) -> None:
        """Tokenize and check the prompt at once, then queue it (or answer with an error).

        ``special``: the prompt may spell special tokens (a rendered chat template);
        ``siblings``: more sequence ids for the same prompt, which share its KV (module doc).
        """
        ids = [seq_id, *siblings]
        problem = (params_problem(self._lib, self._vocab, self.n_vocab, params)
                   or prompt_problem(prompt, self.n_vocab))
        if problem is not None:
            self._emit([invalid_params(i, problem) for i in ids])
            return
        tokens = self.tokenize(prompt, special) if isinstance(prompt, str) else prompt

        def make() -> list[BatchedSequence]:
            group = [BatchedSequence(i, tokens, sibling_params(params, k),
                                     out=TextOutput(params.stop),
                                     trail=LogprobTrail() if params.logprobs else None)
                     for k, i in enumerate(ids)]
            for sibling in group[1:]:
                sibling.leader = group[0]
            return group

        self._accept_group(ids, tokens, self.n_ctx_seq, make)

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
                events += self._admit(self._queue.popleft())
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

    def _admit(self, seq: BatchedSequence) -> list[Event]:
        """Give ``seq`` a free slot, with the longest prefix of its prompt already in KV.

        Three places may hold that prefix: a free slot's cached tokens (kept in place), a live
        sequence's KV (shared with ``llama_memory_seq_cp``: the cells get a second sequence id,
        nothing is copied) and the RAM state cache (restored with ``llama_state_seq_set_data``).
        On a tie the cheaper one wins, in that order. A sampler chain llama.cpp refuses fails
        the sequence (its error event is returned).
        """
        try:
            sampler = SamplerChain(self._lib, seq.params, self.n_vocab,
                                   resolve_seed(seq.params.seed), seq.tokens, self._vocab)
        except GrammarError as exc:
            return [invalid_params(seq.seq_id, {"field": "grammar", "message": str(exc)})]
        free = [slot for slot in self._slots if slot.seq is None]
        limit = len(seq.tokens) - 1  # the last prompt token is always decoded, for its logits
        keep, source = 0, ""
        leader, seq.leader = seq.leader, None
        if leader is not None and leader in self._live and not leader.first_token:
            slot = min(free, key=lambda s: (bool(s.cached), s.last_used))
            self._reuse(slot, 0)  # it waits for the leader's prompt KV (``_fork``)
            seq.leader = leader
            leader.followers.append(seq)
        elif not self.prompt_cache:
            slot = min(free, key=lambda s: s.last_used)
            self._reuse(slot, 0)
        else:
            in_slot, _, _, slot = max(((min(common_prefix(s.cached, seq.tokens), limit),
                                        not s.cached, -s.last_used, s) for s in free),
                                      key=lambda t: t[:3])
            donor, shared = self._best_live(seq.tokens, limit)
            saved, restored = (self._saved.best(seq.tokens[:limit], whole=self._swa)
                               if self._saved else (None, 0))
            if in_slot >= max(shared, restored):
                keep, source = self._reuse(slot, in_slot), "slot"
            else:
                slot = min(free, key=lambda s: (bool(s.cached), s.last_used))
                self._reuse(slot, 0)
                if donor is not None and shared >= restored:
                    self._lib.llama_memory_seq_cp(self._mem, donor.slot, slot.index, 0, shared)
                    keep, source = shared, "shared"
                elif saved is not None:
                    keep, source = self._restore(slot, saved, restored), "ram"
        slot.seq, slot.cached = seq, []
        seq.slot, seq.n_past, seq.cache_hit = slot.index, keep, keep
        seq.cache_source = source if keep else ""
        seq.history = list(seq.tokens)
        seq.started = time.perf_counter()
        seq.sampler = sampler
        seq.drafter = Drafter(self.draft_max) if self.draft_max else None
        self._live.append(seq)
        return []

    def _best_live(self, tokens: list[int], limit: int) -> tuple[BatchedSequence | None, int]:
        """The live sequence whose computed KV shares the longest prefix with ``tokens``."""
        if not self.kv_unified:  # across separate KV streams llama.cpp copies whole sequences only
            return None, 0
        best: BatchedSequence | None = None
        length = 0
        for live in self._live:
            n = min(common_prefix(live.history[:live.n_past], tokens), limit)
            if n > length and self._window_held(live.slot, n):
                best, length = live, n
        return best, length

    def _window_held(self, slot: int, keep: int) -> bool:
        """Whether the slot's KV still has what positions from ``keep`` on attend to.

        A sliding-window cache that is not full-size forgets positions older than the window.
        """
        window_start = self._lib.llama_memory_seq_pos_min(self._mem, slot)
        return bool(0 <= window_start <= max(0, keep - self._n_swa))

    def _reuse(self, slot: Slot, keep: int) -> int:
        """Cut the slot's KV back to its first ``keep`` tokens; 0 where that is not possible.

        What the cut drops is saved to the RAM state cache first.
        """
        lib, mem = self._lib, self._mem
        if keep < len(slot.cached):
            self._save(slot, keep)
        if keep > 0 and not (self._window_held(slot.index, keep)
                             and lib.llama_memory_seq_rm(mem, slot.index, keep, -1)):
            keep = 0
        if keep == 0:
            lib.llama_memory_seq_rm(mem, slot.index, -1, -1)
        slot.cached = slot.cached[:keep]
        return keep

    def _save(self, slot: Slot, keep: int) -> None:
        """Copy the slot's cached KV into the RAM state cache, where it is worth keeping.

        A sliding-window model's saved state holds only the last window of its SWA layers, so
        it can be resumed only at its very end: there the slot is first cut back to its prompt
        (less one token), the point a repeated or continued prompt resumes from.
        """
        cache = self._saved
        if cache is None:
            return
        n = len(slot.cached)
        if self._swa and slot.prompt_len:
            n = min(n, slot.prompt_len - 1)
        if n < MIN_SAVED_TOKENS or n <= keep or cache.holds(slot.cached[:n]):
            return
        if n < len(slot.cached):
            if not self._lib.llama_memory_seq_rm(self._mem, slot.index, n, -1):
                return
            slot.cached = slot.cached[:n]
        size = int(self._lib.llama_state_seq_get_size(self._ctx, slot.index))
        if not 0 < size <= cache.capacity:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(self._lib.llama_state_seq_get_data(self._ctx, buffer, size, slot.index))
        if written == size:
            cache.put(slot.cached, buffer)

    def _restore(self, slot: Slot, saved: SavedState, keep: int) -> int:
        """Load a saved state into the (cleared) slot and cut it to ``keep`` tokens."""
        assert self._saved is not None
        data: Any = saved.data
        if not self._lib.llama_state_seq_set_data(self._ctx, data, len(data), slot.index):
            self._lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)  # no room: prefill
            return 0
        self._saved.touch(saved)
        slot.cached = list(saved.tokens)
        return self._reuse(slot, keep)

    def _step(self, events: list[Event]) -> None:
        """One ``llama_decode`` over every live sequence, then sample where outputs came out."""
        outputs = self._decode(events)
        if outputs is None:
            return
        for seq in self._live:
            seq.n_past += seq.feeding
            seq.feeding, seq.kv_end = 0, seq.n_past
            seq.pending = None
        for seq, index in outputs:
            followers, seq.followers = seq.followers, []
            for follower in followers:  # before the leader's token: it may end the leader
                self._fork(seq, follower)
            for each in (seq, *followers):
                assert each.sampler is not None
                if each.draft:
                    events += self._verify(each, index)
                    continue
                try:
                    token = each.sampler.sample(self._ctx, index)
                except GrammarError as exc:  # this sequence's grammar is stuck: it alone fails
                    events.append(self._fail(each, "invalid_request", f"grammar: {exc}"))
                    continue
                events += self._on_token(each, token)

    def _verify(self, seq: BatchedSequence, index: int) -> list[Event]:
        """Sample the fed token's row and the draft's rows in turn (``speculate.verify``): each
        draft token the chain samples again is kept in the KV, the rest is removed from it."""
        assert seq.sampler is not None and seq.drafter is not None
        draft, seq.draft = seq.draft, []
        seq.n_past = seq.kv_end - len(draft)  # the fed token; its drafts are not verified yet
        sampler, events = seq.sampler, []

        def take(token: int, hit: bool) -> bool:
            if not hit and not self._trim(seq):
                raise RuntimeError("llama.cpp refused to remove a rejected draft from the KV")
            events.extend(self._on_token(seq, token))
            seq.n_past += hit
            return seq in self._live

        try:
            accepted = verify(draft, lambda i: sampler.sample(self._ctx, index + i), take)
        except GrammarError as exc:
            return events + [self._fail(seq, "invalid_request", f"grammar: {exc}")]
        except RuntimeError as exc:
            return events + [self._fail(seq, "internal_error", str(exc))]
        seq.drafter.record(len(draft), accepted)
        self.draft_stats.add(len(draft), accepted)
        return events

    def _trim(self, seq: BatchedSequence) -> bool:
        """Remove the KV cells of drafts not taken (past ``n_past``); False where refused."""
        if seq.kv_end <= seq.n_past:
            return True
        seq.kv_end = seq.n_past
        return bool(self._lib.llama_memory_seq_rm(self._mem, seq.slot, seq.n_past, -1))

    def _fork(self, leader: BatchedSequence, sibling: BatchedSequence) -> None:
        """Give a waiting sibling the leader's KV, which holds exactly the whole prompt now."""
        self._lib.llama_memory_seq_cp(self._mem, leader.slot, sibling.slot, -1, -1)
        sibling.leader = None
        sibling.n_past = sibling.cache_hit = leader.n_past
        sibling.cache_source = "shared"

    def _decode(self, events: list[Event]) -> list[tuple[BatchedSequence, int]] | None:
        """Fill the batch and decode it; the outputs to sample, or None when nothing ran.

        Where the KV cache has no room (``llama_decode`` returns 1 and restores the cache):
        drop idle prompt-cache KV, else defer prefill chunks, else fail the sequence holding
        the most KV; each retry removes something, so this never loops for ever.
        """
        prefill, draft = True, self.draft_max > 0
        while self._live:
            outputs = self._fill_batch(prefill, draft)
            if self._batch.n_tokens == 0:
                return None
            started = time.perf_counter()
            rc = self._lib.llama_decode(self._ctx, self._batch)
            if rc == 0:
                self._budget.observe(*self._filled, time.perf_counter() - started)
                return outputs
            if rc != 1:  # aborted, invalid batch or fatal: fail what was in the batch
                events += [self._fail(s, "internal_error", f"llama_decode returned {rc}")
                           for s in [s for s in self._live if s.feeding]]
                return None
            if draft and any(s.draft for s in self._live):
                draft = False
                continue
            if self._evict_idle():
                continue
            if prefill and any(s.pending is not None for s in self._live):
                prefill = False
                continue
            victim = max(self._live, key=lambda s: s.n_past)
            events.append(self._fail(victim, "server_busy",
                                     "the shared KV cache is full; retry the request"))
        return None

    def _fill_batch(self, prefill: bool, draft: bool = False) -> list[tuple[BatchedSequence, int]]:
        """Write decode tokens (each with its draft), then prompt chunks, into the batch; the
        outputs to sample (a drafted sequence's draft rows follow its own)."""
        outputs: list[tuple[BatchedSequence, int]] = []
        n = 0
        waiting = sum(s.pending is not None for s in self._live)  # decode tokens to place
        draft = draft and waiting <= DRAFT_WIDTH  # a wide step is compute-bound: no drafts
        for seq in self._live:
            seq.feeding, seq.draft = 0, []
            if seq.pending is not None:
                waiting -= 1
                tokens = [seq.pending, *self._draft(seq, self.n_batch - n - waiting - 1)
                          ] if draft else [seq.pending]
                k = len(tokens)
                self._b_token[n:n + k] = tokens
                self._b_pos[n:n + k] = range(seq.n_past, seq.n_past + k)
                self._b_logits[n:n + k] = [1] * k
                for j in range(n, n + k):
                    self._b_seq[j][0] = seq.slot
                outputs.append((seq, n))
                seq.feeding, seq.draft, n = k, tokens[1:], n + k
        decoding, budget = n, self._budget.limit(n)  # prompt tokens this step may carry
        for seq in self._live if prefill else ():
            start = seq.n_past
            short = len(seq.tokens) - start <= SHORT_PROMPT  # a chat turn: not held back
            end = min(len(seq.tokens), start + (self.n_batch - n if short
                                                else budget - (n - decoding)))
            if seq.pending is not None or end <= start or seq.leader is not None:
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
        self._filled = (decoding, n - decoding)
        return outputs

    def _draft(self, seq: BatchedSequence, space: int) -> list[int]:
        """The draft to feed behind ``seq``'s next token: within ``space`` batch entries, the
        tokens ``max_tokens`` still allows after the next one, and the context."""
        if seq.drafter is None:
            return []
        room = min(space, seq.params.max_tokens - seq.generated - 1,
                   self.n_ctx_seq - len(seq.tokens) - seq.generated - 1)
        return seq.drafter.propose(seq.history, room) if room > 0 else []

    def _evict_idle(self) -> bool:
        """Drop the prompt-cache KV of every free slot; whether there was any."""
        held = [slot for slot in self._slots if slot.seq is None and slot.cached]
        for slot in held:
            self._reuse(slot, 0)
            slot.last_used = 0.0
        return bool(held)

    def _on_token(self, seq: BatchedSequence, token: int) -> list[Event]:
        """Account for a sampled token: its text, then whether the sequence ends here."""
        if not seq.first_token:
            seq.first_token = time.perf_counter()
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return self._end(seq, "stop")
        seq.generated += 1
        seq.history.append(token)
        piece = self._token_bytes(token)
        if seq.trail is not None and seq.sampler is not None:
            value, top = seq.sampler.logprob
            seq.trail.add(entry(self._token_bytes, token, piece, value, top,
                                seq.params.top_logprobs > 0))
        text, stopped = seq.out.feed(piece)
        events: list[Event] = [self._text(seq, text, 1)] if text else []
        if stopped:
            if seq.trail is not None:
                seq.trail.drop()  # the stop string's tokens
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
        held = seq.trail is not None and seq.trail.held
        events: list[Event] = [self._text(seq, tail, 0)] if tail or held else []
        return events + [self._finish(seq, reason)]

    def _text(self, seq: BatchedSequence, text: str, tokens: int) -> Event:
        """A text event, with the logprobs of the tokens it releases when they are asked for."""
        logprobs = seq.trail.release() if seq.trail is not None else None
        return Text(seq.seq_id, text, tokens, logprobs).wire()

    def _finish(self, seq: BatchedSequence, reason: str) -> Event:
        self._release(seq, keep_cache=True)
        return Done(seq.seq_id, reason, seq.usage(), seq.timings(),
                    cache={"hit_tokens": seq.cache_hit, "source": seq.cache_source},
                    stop_sequence=seq.out.matched).wire()

    def _fail(self, seq: BatchedSequence, code: str, message: str) -> Event:
        self._release(seq, keep_cache=False)
        return Failed(seq.seq_id, code, message, {"prompt_tokens": len(seq.tokens),
                                                 "completion_tokens": seq.generated}).wire()

    def _release(self, seq: BatchedSequence, keep_cache: bool) -> None:
        """Take ``seq`` out of its slot; keep the slot's KV as prompt cache or clear it."""
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        if seq in self._live:
            self._live.remove(seq)
        if seq.leader is not None and seq in seq.leader.followers:
            seq.leader.followers.remove(seq)
        seq.leader = None
        if seq.followers:
            self._hand_over(seq, keep_cache)
        if seq.slot < 0:
            return
        slot = self._slots[seq.slot]
        slot.seq, slot.last_used, slot.prompt_len = None, time.perf_counter(), len(seq.tokens)
        if keep_cache and self.prompt_cache and seq.n_past > 0 and self._trim(seq):
            slot.cached = seq.history[:seq.n_past]
        else:
            self._lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)
            slot.cached = []

    def _hand_over(self, seq: BatchedSequence, keep_cache: bool) -> None:
        """A leader leaves before its prefill ended: the first waiting sibling leads the rest,
        from the prefix the leader computed (a cancel) or from nothing (a failure)."""
        heir, *rest = seq.followers
        seq.followers = []
        heir.leader, heir.followers = None, rest
        for sibling in rest:
            sibling.leader = heir
        if keep_cache and seq.n_past > 0:  # the leader's KV holds exactly its computed prefix
            self._lib.llama_memory_seq_cp(self._mem, seq.slot, heir.slot, -1, -1)
            heir.n_past = heir.cache_hit = seq.n_past
            heir.cache_source = "shared"

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
