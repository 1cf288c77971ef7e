"""A batching llama.cpp engine: several replies decode together, each chat keeps its KV state.

Jobs in, events out. `submit` hands a request to the decode thread. Every step that thread
evaluates one token of each running reply plus chunks of prompts being read (continuous
batching with chunked prefill: a long prompt never stalls the others for more than one
chunk), samples every reply with its own llama.cpp sampler chain and passes what happened
to the job's callback: `Started`, `Text` per token, then `Done` or `Failed`.

A chat (a request's `key`) owns one sequence slot between its turns, so its next turn
evaluates only the tokens after what the slot already holds (the longest common prefix,
which also makes regenerate and edit cheap). When every slot is taken, the least recently
used idle chat's state is saved to a disk cache and restored on its next turn.

All llama.cpp calls run on the decode thread, and so do the callbacks: they must be quick
(put the event on a queue). The engine knows nothing about chats beyond their keys.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import _internals as internals
from llama_cpp._logger import set_verbose

from app.inference.engine import (
    Finished,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Token,
    Turn,
)
from app.inference.jobs import (
    MODEL_FAILED,
    Done,
    Event,
    EventSink,
    Failed,
    GenerationRequest,
    Job,
    Started,
    Text,
    stream_job,
)
from app.inference.kv_cache import SeqStateCache
from app.inference.prompting import ChatPrompter
from app.inference.sampling import TextStream, make_sampler, token_bytes

log = logging.getLogger(__name__)

IDLE_WAIT = 0.05  # seconds between deadline checks while replies wait for a slot
# Prompt tokens read in one step while other replies are generating: a step's time is
# their gap between two tokens (64 tokens: ~0.2 s on 2 idle cores with the 135M model,
# where 256 took ~0.7 s); with no reply generating a step reads up to `n_batch`.
PREFILL_BESIDE_DECODING = 64


@dataclass
class EngineStats:
    steps: int = 0
    step_sequences: int = 0  # summed over steps: replies in each batch
    prompt_tokens_evaluated: int = 0
    tokens_generated: int = 0
    kv_resident: int = 0  # a returning chat found its state in its slot
    kv_restored: int = 0  # ... in the disk cache
    kv_misses: int = 0  # a chat with a key had no saved state
    kv_evictions: int = 0  # idle chats' states moved to disk to free a slot
    kv_evicted_bytes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def occupancy(self, n_parallel: int) -> float:
        """Mean share of the slots that decoded together per step."""
        return self.step_sequences / (self.steps * n_parallel) if self.steps else 0.0


@dataclass(frozen=True)
class StepPart:
    """One reply's share of a step: prompt tokens read, or its last sampled token."""

    job: int
    seq: int
    tokens: int
    prefill: bool
    sampled: bool  # a token was sampled for it after this step


@dataclass(frozen=True)
class StepRecord:
    """What one step did and when (monotonic seconds), for finding where time goes."""

    began: float
    ended: float
    admitted: tuple[int, ...]  # jobs that got a slot at this step
    parts: tuple[StepPart, ...]


@dataclass
class _Slot:
    seq: int
    key: str | None = None
    tokens: list[int] = field(default_factory=list)  # exactly what the KV cache holds, in order
    prompt_len: int = 0  # the last prompt's length: `tokens` beyond it were generated
    running: _Running | None = None
    last_used: float = 0.0


@dataclass
class _Running:
    job: Job
    slot: _Slot
    todo: list[int]  # prompt tokens still to evaluate
    sampler: internals.LlamaSampler
    text: TextStream
    budget: int
    next_token: int | None = None  # sampled, evaluated at the next step
    generated: int = 0


@dataclass
class _Entry:
    running: _Running
    tokens: list[int]
    prefill: bool  # prompt tokens (else the reply's last sampled token)
    logits: bool  # whether its last token's logits are sampled after this step


class BatchedEngine:
    """One model, one context with `n_parallel` sequences, one decode thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        n_parallel: int = 4,
        n_threads: int = 2,
        n_gpu_layers: int = 0,
        n_batch: int = 256,
        prefill_beside_decoding: int = PREFILL_BESIDE_DECODING,
        use_mmap: bool = True,
        use_mlock: bool = False,
        flash_attn: bool | None = None,
        cache_dir: Path | None = None,
        cache_bytes: int = 1 << 30,
    ) -> None:
        set_verbose(False)
        llama_cpp.llama_backend_init()
        model_params = internals.LlamaModel.default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers == -1 else n_gpu_layers
        model_params.load_mode = {
            (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
            (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
            (True, False): llama_cpp.LLAMA_LOAD_MODE_MMAP,
            (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,
        }[(use_mmap, use_mlock)]
        self._model = internals.LlamaModel(
            path_model=str(model_path), params=model_params, verbose=False)
        n_batch = max(n_batch, n_parallel)
        params = internals.LlamaContext.default_params()
        # Each sequence gets a whole `n_ctx` of its own (separate KV streams, not unified).
        params.n_ctx = n_ctx * n_parallel
        params.n_seq_max = n_parallel
        params.n_batch = params.n_ubatch = n_batch
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False
        params.flash_attn_type = {
            None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        self._ctx = internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = self._model.vocab
        self._n_vocab = self._model.n_vocab()
        self.n_parallel = n_parallel
        self.n_batch = n_batch
        self.prefill_beside_decoding = max(1, min(prefill_beside_decoding, n_batch))
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self._ctx.ctx)
        self._prompter = ChatPrompter(self._model, self.n_ctx)
        self.info = ModelInfo(
            id=model_path.stem,
            path=str(model_path),
            size_bytes=model_path.stat().st_size,
            n_ctx=self.n_ctx,
            prompt_template=self._prompter.template_id,
        )
        self._cache = None
        if cache_dir is not None:
            # Saved states only fit the same model file and context layout.
            layout = f"{model_path.stem}-{self.info.size_bytes}-{self.n_ctx}-fa{flash_attn}"
            self._cache = SeqStateCache(cache_dir / layout, cache_bytes)
        self.stats = EngineStats()
        # Set to a list to record every step (a bench or a test reading where time goes).
        self.trace: list[StepRecord] | None = None
        self._slots = [_Slot(seq) for seq in range(n_parallel)]
        self._running: list[_Running] = []
        self._pending: deque[Job] = deque()
        self._incoming: deque[Job] = deque()
        self._forgotten: deque[str] = deque()  # chats whose KV state is to be dropped
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="batched-engine", daemon=True)
        self._thread.start()

    # -- the interface (any thread) --------------------------------------------------------

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        return self._prompter.fit(system_prompt, history, max_tokens)

    def submit(self, request: GenerationRequest, sink: EventSink) -> Job:
        if not request.prompt:
            raise ValueError("a prompt needs at least one token")
        job = Job(next(self._ids), request, sink, self._wake)
        with self._cond:
            if self._closing:
                raise RuntimeError("the engine is closed")
            self._incoming.append(job)
            self._cond.notify()
        return job

    def forget(self, key: str) -> None:
        """Drop a chat's KV state (in its slot and on disk), e.g. when the chat is deleted.
        Its slot is then free for any chat, its tokens still usable as a shared prefix. A
        chat with a reply running is dropped when that reply ends. A saved state is gone
        when this returns (the decode thread drops it again, after any save in flight)."""
        if self._cache is not None:
            self._cache.discard(key)
        with self._cond:
            self._forgotten.append(key)
            self._cond.notify()

    @property
    def busy(self) -> int:
        """Replies decoding or waiting for a slot."""
        return len(self._running) + len(self._pending) + len(self._incoming)

    def stream(self, prompt: PreparedPrompt, params: SamplingParams
               ) -> Iterator[Token | Finished]:
        return stream_job(self, prompt, params)

    def close(self) -> None:
        """End every open reply as interrupted, save resident chats' states, free the model."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for running in list(self._running):
            self._finish(running, Done("interrupted"))
        for job in [*self._pending, *self._incoming]:
            self._end(job, Done("interrupted"))
        self._pending.clear()
        self._incoming.clear()
        self._drop(list(self._forgotten))  # a chat deleted just before: not saved below
        for slot in self._slots:
            if slot.key is not None and slot.tokens:
                self._save(slot, evicted=False)
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        self._model.close()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the decode thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                if not (self._forgotten or self._incoming or self._pending or self._running):
                    self._cond.wait()
                    continue
            try:
                if not self._step():
                    with self._cond:  # replies wait for a slot: check their deadlines now and then
                        self._cond.wait(IDLE_WAIT)
            except Exception as error:  # never leave replies hanging on an unexpected error
                log.exception("decode step failed")
                self._reset_after(error)

    def _step(self) -> bool:
        """One step: admit, evaluate one batch, sample. False when nothing could run."""
        now = time.monotonic()
        with self._cond:  # together: a chat forgotten before a submit is gone when it starts
            self._pending.extend(self._incoming)
            self._incoming.clear()
            forgotten = list(self._forgotten)
            self._forgotten.clear()
        self._drop(forgotten)
        self._expire(now)
        admitted = self._admit(now)
        entries = self._plan()
        if not entries:
            return False
        self.stats.steps += 1
        self.stats.step_sequences += len({id(entry.running) for entry in entries})
        status = self._decode(entries)
        if self.trace is not None:
            self.trace.append(StepRecord(now, time.monotonic(), tuple(admitted), tuple(
                StepPart(e.running.job.id, e.running.slot.seq, len(e.tokens), e.prefill,
                         e.logits and status == 0) for e in entries)))
        if status == 0:
            self._sample(entries)
            return True
        # Isolate the failure: undo what the call may have left, retry each reply alone,
        # and fail only the replies that fail by themselves.
        for entry in entries:
            self._forget_uncommitted(entry.running.slot)
        for entry in entries:
            status = self._decode([entry])
            if status == 0:
                self._sample([entry])
            else:
                self._forget_uncommitted(entry.running.slot)
                self._finish(entry.running, Failed(
                    "generation_failed", f"The model failed to evaluate (status {status})."))
        return True

    def _expire(self, now: float) -> None:
        for job in list(self._pending):
            ended = job.expired(now)
            if ended is not None:
                self._pending.remove(job)
                self._end(job, ended)
        for running in list(self._running):
            ended = running.job.expired(now)
            if ended is not None:
                self._finish(running, ended)

    def _drop(self, keys: list[str]) -> None:
        for key in keys:
            slot = next((s for s in self._slots if s.key == key), None)
            if slot is not None and slot.running is not None:
                with self._cond:
                    self._forgotten.append(key)  # again after its reply
                continue
            if slot is not None:
                slot.key = None
            if self._cache is not None:
                self._cache.discard(key)

    def _admit(self, now: float) -> list[int]:
        """Give every waiting job that can start a slot now; the ids of those started."""
        started: list[int] = []
        for job in list(self._pending):
            if job.key is not None and any(
                    s.running is not None and s.key == job.key for s in self._slots):
                continue  # the chat's previous reply is still running: this one waits
            if len(job.request.prompt) >= self.n_ctx:
                self._pending.remove(job)
                self._end(job, Failed("context_too_long", (
                    f"The prompt has {len(job.request.prompt)} tokens; the context holds "
                    f"{self.n_ctx} including the reply.")))
                continue
            slot = self._free_slot(job)
            if slot is None:
                break
            self._pending.remove(job)
            self._start(job, slot, now)
            started.append(job.id)
        return started

    def _free_slot(self, job: Job) -> _Slot | None:
        idle = [s for s in self._slots if s.running is None]
        if not idle:
            return None
        own = [s for s in idle if job.key is not None and s.key == job.key]
        if own:
            return own[0]
        spare = [s for s in idle if s.key is None]  # empty, or left by a reply without a chat
        if spare:
            # The one whose last prompt this prompt continues (a client resending the whole
            # history, as /v1 clients do); else the least recently used, empty ones first.
            # Not merely the longest shared prefix: new chats sharing a system prompt would
            # take one another's slot turn after turn, and each would read its history again.
            prompt = job.request.prompt
            continued = [(common, s) for s in spare if s.tokens
                         and (common := _common_prefix(s.tokens, prompt)) >= s.prompt_len]
            if continued:
                return max(continued, key=lambda cs: cs[0])[1]
            return min(spare, key=lambda s: (bool(s.tokens), s.last_used))
        return min(idle, key=lambda s: s.last_used)  # the least recently used chat's

    def _start(self, job: Job, slot: _Slot, now: float) -> None:
        prompt = job.request.prompt
        if job.key is None:
            cache = "none"
        elif slot.key == job.key:
            cache = "resident" if slot.tokens else "miss"
        else:
            cache = "miss"
        if slot.key != job.key:
            if slot.key is not None and slot.tokens:
                self._save(slot)  # the slot's old prefix stays usable below
            slot.key = job.key
            if job.key is not None and self._restore(slot, job.key):
                cache = "restored"
        keep = min(_common_prefix(slot.tokens, prompt), len(prompt) - 1)
        if keep < len(slot.tokens):
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1):
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                keep = 0
            del slot.tokens[keep:]
        counter = {"resident": "kv_resident", "restored": "kv_restored", "miss": "kv_misses"}
        if cache in counter:
            setattr(self.stats, counter[cache], getattr(self.stats, counter[cache]) + 1)
        params = job.request.params
        running = _Running(
            job=job, slot=slot, todo=prompt[keep:],
            sampler=make_sampler(params, self._n_vocab), text=TextStream(params.stop),
            budget=min(params.max_tokens, self.n_ctx - len(prompt)),
        )
        slot.running = running
        slot.prompt_len = len(prompt)
        slot.last_used = now
        self._running.append(running)
        job.stats.reused_tokens, job.stats.cache = keep, cache
        job.stats.wait_seconds = now - job.submitted
        self._emit(job, Started(len(prompt), keep, cache))

    def _plan(self) -> list[_Entry]:
        """This step's batch: every decoding reply's next token, and of the prompts being
        read as much as fits in `n_batch`, shortest rest first (all prompts that arrived
        together are read in this one call, and each is sampled as soon as its last chunk
        is in; a long prompt takes the room left, so it never holds back short ones).
        While replies are generating, a long prompt gets `prefill_beside_decoding` tokens a
        step, so it delays their next token by a short chunk, not by `n_batch`; prompts no
        longer than that are read whole beside them (within `n_batch`): several arriving
        together cost the running replies one step's gap, and none waits a step more for
        its first token (reading costs the same per token in one step or two).

        The batch is laid out in sequence order: over separate KV streams llama.cpp splits
        a batch into passes of consecutive sequences, so out of order one step would run
        as several passes over the weights."""
        entries = [_Entry(r, [r.next_token], False, True) for r in self._running
                   if r.next_token is not None]
        room = self.n_batch - len(entries)
        chunk_room = min(room, self.prefill_beside_decoding) if entries else room
        for running in sorted((r for r in self._running if r.todo), key=lambda r: len(r.todo)):
            whole = len(running.todo) <= min(room, self.prefill_beside_decoding)
            if not whole and chunk_room <= 0:
                break
            chunk = running.todo[:len(running.todo) if whole else min(room, chunk_room)]
            chunk_room -= len(chunk)
            entries.append(_Entry(running, chunk, True, len(chunk) == len(running.todo)))
            room -= len(chunk)
            if room <= 0:
                break
        entries.sort(key=lambda entry: entry.running.slot.seq)
        return entries

    def _fill(self, entries: list[_Entry]) -> int:
        batch, n = self._batch, 0
        for entry in entries:
            position = len(entry.running.slot.tokens)
            for offset, token in enumerate(entry.tokens):
                batch.token[n] = token
                batch.pos[n] = position + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = entry.running.slot.seq
                batch.logits[n] = entry.logits and offset == len(entry.tokens) - 1
                n += 1
        batch.n_tokens = n
        return n

    def _decode(self, entries: list[_Entry]) -> int:
        """Evaluate a batch; llama_decode's status (0 on success)."""
        self._fill(entries)
        return int(llama_cpp.llama_decode(self._ctx.ctx, self._batch))

    def _forget_uncommitted(self, slot: _Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, len(slot.tokens), -1)

    def _sample(self, entries: list[_Entry]) -> None:
        """Commit what the last decode evaluated, then sample each reply whose turn it is."""
        now, index = time.monotonic(), -1
        for entry in entries:
            running = entry.running
            running.slot.tokens.extend(entry.tokens)
            index += len(entry.tokens)
            if entry.prefill:
                del running.todo[:len(entry.tokens)]
                running.job.stats.evaluated_tokens += len(entry.tokens)
                self.stats.prompt_tokens_evaluated += len(entry.tokens)
            else:
                running.next_token = None
            if entry.logits:
                token = llama_cpp.llama_sampler_sample(
                    running.sampler.sampler, self._ctx.ctx, index)
                self._accept(running, token, now)

    def _accept(self, running: _Running, token: int, now: float) -> None:
        job = running.job
        if job.stats.first_token_seconds is None:
            job.stats.first_token_seconds = now - job.submitted
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(running, Done("stop"))
            return
        running.generated += 1
        job.stats.generated_tokens += 1
        self.stats.tokens_generated += 1
        text = running.text.push(token_bytes(self._vocab, token))
        self._emit(job, Text(text, 1))
        if running.text.stopped:
            self._finish(running, Done("stop"))
        elif running.generated >= running.budget or len(running.slot.tokens) >= self.n_ctx:
            self._finish(running, Done("length"))
        else:
            running.next_token = token

    def _finish(self, running: _Running, outcome: Done | Failed) -> None:
        if isinstance(outcome, Done) and outcome.reason in ("stop", "length"):
            rest = running.text.flush()
            if rest:
                self._emit(running.job, Text(rest, 0))
        running.slot.running = None
        running.slot.last_used = time.monotonic()
        running.sampler.close()
        self._running.remove(running)
        self._end(running.job, outcome)

    def _end(self, job: Job, outcome: Done | Failed) -> None:
        if job.outcome is not None:
            return
        job.outcome = outcome
        self.stats.outcomes[outcome.reason if isinstance(outcome, Done) else outcome.code] += 1
        self._emit(job, outcome)
        job.done.set()

    def _emit(self, job: Job, event: Event) -> None:
        job.emit(event)

    # -- KV state on disk -----------------------------------------------------------------

    def _save(self, slot: _Slot, evicted: bool = True) -> None:
        """Move an idle chat's state to the disk cache (its KV cells stay until reused)."""
        key, tokens = slot.key, list(slot.tokens)
        slot.key = None
        if self._cache is None or key is None:
            return
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, slot.seq)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, buffer, size, slot.seq)
        if written and self._cache.put(key, tokens, bytes(memoryview(buffer)[:written])) \
                and evicted:
            self.stats.kv_evictions += 1
            self.stats.kv_evicted_bytes += written

    def _restore(self, slot: _Slot, key: str) -> bool:
        if self._cache is None:
            return False
        saved = self._cache.take(key)
        if saved is None:
            return False
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        slot.tokens = []
        buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
        loaded = llama_cpp.llama_state_seq_set_data(
            self._ctx.ctx, buffer, len(saved.data), slot.seq)
        held = llama_cpp.llama_memory_seq_pos_max(self._memory, slot.seq) + 1
        if not loaded or held != len(saved.tokens):
            log.warning("could not restore the KV state of %s; evaluating it again", key)
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            return False
        slot.tokens = saved.tokens
        slot.prompt_len = len(saved.tokens)
        return True

    def _reset_after(self, error: Exception) -> None:
        """An unexpected error in a step: fail the running replies, forget the KV cache."""
        log.error("a decoding step failed; its replies end as failed", exc_info=error)
        for running in list(self._running):
            self._finish(running, Failed("generation_failed", MODEL_FAILED))
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self._slots:
            slot.key, slot.tokens = None, []


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
