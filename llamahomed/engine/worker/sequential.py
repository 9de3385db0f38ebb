"""The first engine: llama-cpp-python's ``Llama``, one sequence decoding at a time.

It speaks the full worker protocol (many sequences in flight, each with its id, cancel at any
step), so the continuous-batching engine can replace it without touching the daemon. Sequences
queue in arrival order; each step decodes one token of the sequence at the head.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llamahomed.engine.config import LoadConfig
from llamahomed.engine.protocol import Done, Failed, Prompt, SamplingParams, Text
from llamahomed.engine.worker.detok import TextOutput
from llamahomed.engine.worker.embed import Embedder
from llamahomed.engine.worker.inbox import Inbox, SequenceState, sibling_params, special_tokens
from llamahomed.engine.worker.sampling import invalid_params, params_problem, prompt_problem

Event = dict[str, Any]
Emit = Callable[[list[Event]], None]


def _bias_processor(bias: tuple[tuple[int, float], ...]) -> Any:
    """``logit_bias`` as a llama-cpp-python logits processor (None when there is none)."""
    if not bias:
        return None
    from llama_cpp import LogitsProcessorList

    tokens = [token for token, _ in bias]
    values = [value for _, value in bias]

    def add(input_ids: Any, scores: Any) -> Any:
        scores[tokens] += values
        return scores

    return LogitsProcessorList([add])


@dataclass(eq=False)
class Sequence(SequenceState):
    stream: Generator[int, Any, None] | None = None


class SequentialEngine(Inbox[Sequence]):
    """Owns one ``llama_cpp.Llama``; ``run()`` is the decode thread's loop."""

    def __init__(self, llm: Any, emit: Emit) -> None:
        import llama_cpp

        super().__init__(emit)
        self._llama_cpp = llama_cpp
        self.llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)

    @classmethod
    def load(cls, wire: LoadConfig | Mapping[str, Any], emit: Emit) -> SequentialEngine:
        import llama_cpp

        from llamahomed.engine.worker.batched import kv_ggml_type

        config = LoadConfig.from_wire(wire)
        llm = llama_cpp.Llama(
            model_path=config.model_path,
            n_ctx=config.n_ctx,
            n_batch=config.n_batch,
            n_threads=config.n_threads,
            n_gpu_layers=config.n_gpu_layers,
            n_ubatch=config.n_ubatch,
            swa_full=config.swa_full,
            type_k=kv_ggml_type(llama_cpp, config.kv_type),
            type_v=kv_ggml_type(llama_cpp, config.kv_type),
            seed=llama_cpp.LLAMA_DEFAULT_SEED if config.seed is None else config.seed,
            verbose=config.verbose,
        )
        return cls(llm, emit)

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.llm.n_ctx(),
                "n_ctx_train": self._llama_cpp.llama_model_n_ctx_train(self.llm.model),
                "n_vocab": self.llm.n_vocab(), "n_threads": self.llm.n_threads,
                "n_batch": self.llm.n_batch, "n_slots": 1, "engine": "sequential",
                **special_tokens(self._llama_cpp, self._vocab)}

    def embedder(self) -> Embedder:
        """Embeddings on this model through a context of its own (see ``embed.py``)."""
        return Embedder(self._llama_cpp, self.llm.model, self.llm.n_ctx(), int(self.llm.n_threads))

    # -- called from the reader thread -------------------------------------------------------
    def submit(self, seq_id: int, prompt: Prompt, params: SamplingParams, special: bool = False,
               siblings: Iterable[int] = ()) -> None:
        """Tokenize and check the prompt at once, then queue it (or answer with an error).

        ``siblings``: more sequences of the same prompt, run one after another (this engine
        decodes one sequence at a time, so nothing is shared).
        """
        ids = [seq_id, *siblings]
        problem = (params_problem(self._llama_cpp, self._vocab, self.llm.n_vocab(), params)
                   or prompt_problem(prompt, self.llm.n_vocab()))
        if problem is None and params.logprobs:
            problem = {"field": "logprobs",
                       "message": "log probabilities need the batched engine "
                                  "(system_settings.engine)"}
        if problem is not None:
            self._emit([invalid_params(i, problem) for i in ids])
            return
        tokens = (self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=special)
                  if isinstance(prompt, str) else prompt)
        self._accept_group(ids, tokens, self.llm.n_ctx(), lambda: [
            Sequence(i, tokens, sibling_params(params, k), out=TextOutput(params.stop))
            for k, i in enumerate(ids)])

    # -- the decode thread --------------------------------------------------------------------
    def run(self) -> None:
        active: Sequence | None = None
        while True:
            with self._cond:
                while not self._stopping and active is None and not self._queue:
                    self._cond.wait()
                if self._stopping:
                    return
                if active is not None and active.seq_id in self._cancelled:
                    self._cancelled.discard(active.seq_id)
                    self._emit([self._finish(active, "cancelled")])
                    active = None
                    continue
                if active is None:
                    active = self._queue.popleft()
                    if active.seq_id in self._cancelled:
                        self._cancelled.discard(active.seq_id)
                        self._emit([self._finish(active, "cancelled")])
                        active = None
                        continue
            try:
                events, done = self._step(active)
            except Exception as exc:  # noqa: BLE001 - a failed decode fails this sequence only
                events, done = [Failed(active.seq_id, "internal_error",
                                       f"decode failed: {exc}").wire()], True
            self._emit(events)
            if done:
                active = None

    def _start(self, seq: Sequence) -> None:
        from llama_cpp.llama_grammar import LlamaGrammar

        seed = seq.params.seed if seq.params.seed is not None else random.getrandbits(31)
        self.llm.set_seed(seed)
        seq.started = time.perf_counter()
        seq.stream = self.llm.generate(
            seq.tokens, top_k=seq.params.top_k, top_p=seq.params.top_p, min_p=seq.params.min_p,
            temp=seq.params.temperature, repeat_penalty=seq.params.repeat_penalty, reset=True,
            frequency_penalty=seq.params.frequency_penalty,
            presence_penalty=seq.params.presence_penalty,
            logits_processor=_bias_processor(seq.params.logit_bias),
            grammar=(LlamaGrammar.from_string(seq.params.grammar, verbose=False)
                     if seq.params.grammar else None))

    def _step(self, seq: Sequence) -> tuple[list[Event], bool]:
        if seq.stream is None:
            self._start(seq)
        assert seq.stream is not None
        token = next(seq.stream)
        if not seq.first_token:
            seq.first_token = time.perf_counter()
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return self._end(seq, "stop"), True
        seq.generated += 1
        piece = self.llm.detokenize([token])
        text, stopped = seq.out.feed(piece)
        events: list[Event] = [Text(seq.seq_id, text, 1).wire()] if text else []
        if stopped:
            return events + [self._finish(seq, "stop")], True
        room = self.llm.n_ctx() - len(seq.tokens) - seq.generated
        if seq.generated >= seq.params.max_tokens or room <= 0:
            return events + self._end(seq, "length"), True
        return events, False

    def _end(self, seq: Sequence, reason: str) -> list[Event]:
        """Flush held-back text, then finish."""
        tail = seq.out.flush()
        events: list[Event] = [Text(seq.seq_id, tail, 0).wire()] if tail else []
        return events + [self._finish(seq, reason)]

    def _finish(self, seq: Sequence, reason: str) -> Event:
        if seq.stream is not None:
            seq.stream.close()
        if not seq.started:
            seq.started = time.perf_counter()
        return Done(seq.seq_id, reason, seq.usage(), seq.timings(),
                    stop_sequence=seq.out.matched).wire()
