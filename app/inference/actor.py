"""The inference actor: the one owner of the engine, feeding it replies from a fair queue.

Jobs are replies already recorded as `queued`. They wait in a queue that takes turns
between users; the actor hands the engine as many as it decodes together (its
`n_parallel`) and gives each new one to the engine as soon as a running one ends
(continuous batching). Preparing a reply (its history, its prompt) runs in a worker
thread, so the event loop never waits on the model or the read models.

What the engine reports is recorded as events on the session, in one recorder thread:
started, tokens in small batches, then completed, failed, cancelled or interrupted. Every
commit waits for the disk and costs CPU time the model shares (its projections, the
streams it wakes), so the tokens of all the replies being written go in one commit per
flush interval (100 ms), and a reply's own only when 16 are waiting; a reply's first token
is committed at once so its reader sees it begin.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from uuid import UUID

import anyio

from app.conversations import Conversation
from app.inference.engine import ContextTooLong, Engine, PreparedPrompt, Turn
from app.inference.fair_queue import FairQueue
from app.inference.jobs import (
    Done,
    Event,
    Failed,
    GenerationRequest,
    JobEngine,
    Started,
    Text,
)
from app.inference.jobs import Job as EngineJob
from app.inference.memory import RESERVE_SHARE, Recall, prepare_with_memory
from app.inference.sampling import GenerationParams
from app.inference.serial_engine import SerialEngine
from domain.application import ChatApplication
from domain.errors import DomainError
from domain.sessions import ChatSession

log = logging.getLogger(__name__)

RECENT_WINDOW = 20  # generations remembered for tokens_per_second_recent
DRAIN_SECONDS = 15.0  # how long shutdown waits for running replies to be recorded
DEFAULT_REPLY_SECONDS = 10.0  # a reply's expected length before any was measured
# Sessions' `origin`s that are made per request (app.usecases.llm's hidden sessions).
ONE_REQUEST_ORIGINS = ("api",)


class QueueFull(Exception):
    """The queue already holds `waiting` replies, as many as it may."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} replies are already waiting.")
        self.waiting = waiting


class ModelNotLoaded(Exception):
    pass


class TooManyQueued(Exception):
    """This user already has as many replies waiting as one user may (429 + Retry-After)."""

    def __init__(self, cap: int, retry_after: int) -> None:
        super().__init__(f"You already have {cap} replies waiting.")
        self.cap = cap
        self.retry_after = retry_after


# Reads what a reply answers: (session_id, reply_id, position of its queueing).
class ConversationSource(Protocol):
    def __call__(self, session_id: UUID, reply_id: UUID, position: int) -> Conversation: ...

    def recall(self, session_id: UUID, reply_id: UUID, query: str) -> Recall: ...


# Recording a reply's failure when the store refuses it (a full disk): retried at 0.5 s,
# doubling to 30 s, about 10 minutes in all.
FAIL_RECORD_FIRST_SECONDS = 0.5
FAIL_RECORD_MAX_SECONDS = 30.0
FAIL_RECORD_ATTEMPTS = 25


@dataclass
class Job:
    session_id: UUID
    reply_id: UUID
    position: int
    owner: str = ""  # whose turn it is in the fair queue
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Generation:
    tokens: int
    seconds: float
    time_to_first_token: float | None


@dataclass
class Tuning:
    max_queue: int
    timeout: float
    flush_interval: float
    flush_count: int
    first_token_timeout: float | None = None
    max_queued_per_user: int | None = None


@dataclass
class _Flight:
    """A reply handed to the engine (or being prepared for it)."""

    job: Job
    engine: JobEngine | None = None
    handle: EngineJob | None = None
    prompt: PreparedPrompt | None = None
    params: GenerationParams | None = None
    batch: _TokenBatch | None = None
    started: float = 0.0
    first_token_at: float | None = None
    cached_tokens: int = 0
    recalled: list[str] = field(default_factory=list)  # earlier messages put back (memory)


class InferenceActor:
    def __init__(self, chat: ChatApplication, conversations: ConversationSource,
                 tuning: Tuning) -> None:
        self._chat = chat
        self._conversations = conversations
        self._tuning = tuning
        self.engine: Engine | None = None  # a job-taking engine, or one reply at a time
        self.load_error: str | None = None
        self._waiting: FairQueue[Job] = FairQueue()
        # Places held for replies being recorded (between the checks and enqueue), in all
        # and per user, so racing requests cannot overfill the queue or a user's share.
        self._held = 0
        self._held_by: Counter[str] = Counter()
        self._flights: dict[UUID, _Flight] = {}  # by reply id
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: queue.Queue[tuple[_Flight, Event] | None] = queue.Queue()
        self._last_flush = 0.0  # the recorder's last commit of waiting tokens
        self._recorder: threading.Thread | None = None
        self._landed = threading.Condition(self._lock)
        self._serial: SerialEngine | None = None  # wraps a one-reply-at-a-time engine
        self.recent: deque[Generation] = deque(maxlen=RECENT_WINDOW)
        self.generations_total = 0
        self.tokens_total = 0
        self._stopping = False
        # Several web workers (PostgreSQL): asked in the worker thread before a reply
        # starts, False when another worker took it (app/cluster/replies.py). None: this
        # process is the only actor, every queued reply is its own.
        self.claim: Callable[[UUID, UUID], bool] | None = None

    # -- the queue (called from request handlers) ----------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def generating(self) -> bool:
        return bool(self._flights)

    def place_of(self, reply_id: UUID) -> int | None:
        """A waiting reply's place as next_position counts it (1 + the replies being
        written + those to start before it); None once it started or left the queue."""
        with self._lock:
            for ahead, job in enumerate(self._waiting.in_turn_order()):
                if job.reply_id == reply_id:
                    return len(self._flights) + ahead + 1
        return None

    def next_position(self, owner: str | None = None) -> int:
        """The place a reply queued now would get: 1 + the replies before it, those being
        written included. With `owner`, refuses a user over their share of the queue."""
        if self.engine is None:
            raise ModelNotLoaded(self.load_error or "The model is not loaded.")
        with self._lock:
            return self._check_place(owner)

    @contextmanager
    def place(self, owner: str | None = None) -> Iterator[int]:
        """Hold a place for a reply while it is recorded, then `enqueue` it inside the
        block: the checks of `next_position` count every place held, so requests racing
        through the recording cannot overfill the queue or a user's share of it."""
        if self.engine is None:
            raise ModelNotLoaded(self.load_error or "The model is not loaded.")
        with self._lock:
            position = self._check_place(owner)
            self._held += 1
            if owner is not None:
                self._held_by[owner] += 1
        try:
            yield position
        finally:
            with self._lock:
                self._held -= 1
                if owner is not None:
                    self._held_by[owner] -= 1
                    if not self._held_by[owner]:
                        del self._held_by[owner]

    def _check_place(self, owner: str | None) -> int:
        waiting = len(self._waiting) + self._held
        if waiting >= self._tuning.max_queue:
            raise QueueFull(waiting)
        cap = self._tuning.max_queued_per_user
        if (owner is not None and cap is not None
                and self._waiting.count(owner) + self._held_by[owner] >= cap):
            raise TooManyQueued(cap, self._retry_after())
        ahead = (self._waiting.ahead_of_new(owner) if owner is not None
                 else len(self._waiting))
        return len(self._flights) + ahead + self._held + 1

    def enqueue(self, session_id: UUID, reply_id: UUID, position: int,
                owner: str | None = None) -> None:
        """Queue a reply recorded as queued at log `position`; `owner` takes turns with
        other users (without one, the session stands for its user)."""
        job = Job(session_id, reply_id, position, owner or f"session:{session_id}")
        with self._lock:
            if reply_id in self._flights or any(j.reply_id == reply_id for j in self._waiting):
                return  # heard twice (several workers: its request, and the log's notice)
            self._waiting.push(job.owner, job)
        self._wakeup.set()

    def withdraw(self, session_id: UUID) -> tuple[list[UUID], bool]:
        """Take a session's replies off the queue and signal its running reply to stop.

        Returns the withdrawn reply ids (the caller records them as cancelled) and whether
        a running reply was signalled (the actor records that one itself).
        """
        with self._lock:
            withdrawn = self._waiting.remove(lambda job: job.session_id == session_id)
            running = [f for f in self._flights.values() if f.job.session_id == session_id]
            for flight in running:
                flight.job.cancelled.set()
                if flight.handle is not None:
                    flight.handle.cancel()
        return [job.reply_id for job in withdrawn], bool(running)

    def forget(self, session_id: UUID) -> None:
        """Drop a session's KV state (its slot, its saved cache file), e.g. once deleted."""
        forget = getattr(self.engine, "forget", None)
        if forget is not None:
            forget(str(session_id))

    def shutdown(self) -> None:
        """Stop the running replies; they are recorded as interrupted, keeping their text."""
        with self._lock:
            self._stopping = True
            self._cancel_flights()

    def tokens_per_second_recent(self) -> float:
        tokens = sum(g.tokens for g in self.recent)
        seconds = sum(g.seconds for g in self.recent)
        return round(tokens / seconds, 2) if seconds else 0.0

    def _retry_after(self) -> int:
        seconds = [g.seconds for g in self.recent]
        typical = sum(seconds) / len(seconds) if seconds else DEFAULT_REPLY_SECONDS
        return max(1, min(60, math.ceil(typical)))

    def _cancel_flights(self) -> None:
        for flight in self._flights.values():
            flight.job.cancelled.set()
            if flight.handle is not None:
                flight.handle.cancel()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        if self._recorder is None:
            self._recorder = threading.Thread(target=self._record_events,
                                              name="reply-recorder", daemon=True)
            self._recorder.start()
        try:
            while True:
                self._wakeup.clear()
                flight = self._take_off()
                if flight is None:
                    await self._wakeup.wait()
                    continue
                try:
                    await anyio.to_thread.run_sync(self._begin, flight, abandon_on_cancel=False)
                except Exception as error:
                    log.exception("starting reply %s crashed", flight.job.reply_id)
                    await anyio.to_thread.run_sync(self._fail_after_crash, flight.job, error)
                    self._land(flight)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._drain)
            raise

    def _take_off(self) -> _Flight | None:
        """The next reply to hand the engine, if it has room (one reply per chat at once)."""
        with self._lock:
            engine = self._job_engine()
            room = engine.n_parallel if engine is not None else 1
            if len(self._flights) >= room:
                return None
            busy = {f.job.session_id for f in self._flights.values()}
            job = self._waiting.pop(lambda j: j.session_id not in busy)
            if job is None:
                return None
            flight = _Flight(job, engine)
            self._flights[job.reply_id] = flight
            return flight

    def _job_engine(self) -> JobEngine | None:
        """The engine as a job taker; a one-reply-at-a-time engine gets a serial wrapper."""
        engine = self.engine
        if engine is None:
            return None
        if hasattr(engine, "submit"):
            return cast(JobEngine, engine)
        if self._serial is None or self._serial.inner is not engine:
            old, self._serial = self._serial, SerialEngine(engine)
            if old is not None:
                threading.Thread(target=old.close, daemon=True).start()
        return self._serial

    def _land(self, flight: _Flight) -> None:
        """The reply is over (recorded): its place goes to the next one."""
        with self._lock:
            self._flights.pop(flight.job.reply_id, None)
            self._landed.notify_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _drain(self) -> None:
        """At shutdown: end every running reply as interrupted and wait for the records."""
        deadline = time.monotonic() + DRAIN_SECONDS
        with self._lock:
            self._stopping = True
            self._cancel_flights()
            while self._flights and time.monotonic() < deadline:
                self._landed.wait(deadline - time.monotonic())
        self._events.put(None)
        if self._recorder is not None:
            self._recorder.join(DRAIN_SECONDS)
            self._recorder = None

    # -- starting a reply (worker thread) --------------------------------------------------

    def _record(self, job: Job, change: Callable[[ChatSession], None]) -> bool:
        try:
            self._chat.change_reply(job.session_id, change)
            return True
        except DomainError as error:  # e.g. the reply was already ended elsewhere
            log.info("reply %s: %s", job.reply_id, error)
            return False

    def _fail_after_crash(self, job: Job, error: Exception) -> None:
        """Never leave a reply open: end it as failed (its text so far stays in the log).

        The error's text goes to the server log, not to the user. If the store refuses the
        record too (a full disk), keep trying with back-off until it has room again."""
        log.error("reply %s failed: %r", job.reply_id, error)
        reason = "The server failed while writing this reply."
        pause = FAIL_RECORD_FIRST_SECONDS
        for _attempt in range(FAIL_RECORD_ATTEMPTS):
            try:
                self._record(job, lambda s: s.fail_reply(job.reply_id, "internal_error",
                                                         reason))
                return
            except Exception:
                log.exception("could not record the failure of reply %s", job.reply_id)
            if self._stopping:  # the restart marks it interrupted
                return
            time.sleep(pause)
            pause = min(pause * 2, FAIL_RECORD_MAX_SECONDS)

    def _begin(self, flight: _Flight) -> None:
        """Read the reply's conversation, fit the prompt, record the start, submit it."""
        job, engine, rid = flight.job, flight.engine, flight.job.reply_id
        if self.claim is not None and not self.claim(job.session_id, rid):
            self._land(flight)  # another worker generates it, or it ended
            return
        if engine is None:
            self._record(job, lambda s: s.fail_reply(rid, "model_not_loaded",
                                                     "The model is not loaded."))
            self._land(flight)
            return
        if job.cancelled.is_set():
            self._record(job, (lambda s: s.interrupt_reply(rid)) if self._stopping
                         else (lambda s: s.cancel_reply(rid)))
            self._land(flight)
            return
        conversation = self._conversations(job.session_id, rid, job.position)
        config = conversation.config
        history = [Turn(role, content) for _id, role, content in conversation.turns]
        question = history[-1].content if history else ""
        try:
            fitted = prepare_with_memory(
                engine.prepare, config["system_prompt"], history,
                [message_id for message_id, _role, _content in conversation.turns],
                config["max_tokens"],
                self._conversations.recall(job.session_id, rid, question),
                reserve_tokens=engine.info.n_ctx // RESERVE_SHARE, history_cut=conversation.cut)
        except ContextTooLong as error:
            reason = str(error)
            self._record(job, lambda s: s.fail_reply(rid, "context_too_long", reason))
            self._land(flight)
            return
        prompt, flight.recalled = fitted.prompt, fitted.recalled_ids
        # Its start is recorded by the recorder thread when the engine reports it (before
        # any token of it): the engine starts reading the prompt without waiting for a commit.
        seed = config.get("seed")
        flight.prompt, flight.params = prompt, GenerationParams(
            temperature=config["temperature"], top_p=config["top_p"],
            max_tokens=prompt.max_tokens, seed=seed if isinstance(seed, int) else None,
            stop=tuple(s for s in config.get("stop") or () if isinstance(s, str)))
        flight.batch = _TokenBatch(self, job)
        flight.started = time.monotonic()
        # A session made for one request (the LLM API's) has no next turn: its reply keeps
        # no KV state of its own, and its slot stays a prefix the client's next request,
        # which resends the whole history, finds and continues.
        key = None if config.get("origin") in ONE_REQUEST_ORIGINS else str(job.session_id)
        handle = engine.submit(GenerationRequest(
            prompt.tokens, flight.params, key=key,
            timeout=self._tuning.timeout, first_token_timeout=self._tuning.first_token_timeout,
            turns=prompt.turns,
        ), lambda event: self._events.put((flight, event)))
        with self._lock:
            flight.handle = handle
            cancelled = job.cancelled.is_set()
        if cancelled:
            handle.cancel()

    # -- recording what the engine reports (recorder thread) -------------------------------

    def _record_events(self) -> None:
        while True:
            try:
                item = self._events.get(timeout=self._tuning.flush_interval)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                return
            if item:
                flight, event = item
                try:
                    self._on_event(flight, event)
                except Exception as error:
                    self._recording_crashed(flight, error)
            self._flush_due()

    def _recording_crashed(self, flight: _Flight, error: Exception) -> None:
        """The store refused a reply's record (a full or read-only disk): stop generating
        it and end it as failed, keeping this thread alive for the other replies."""
        log.exception("recording reply %s crashed", flight.job.reply_id)
        with self._lock:
            flight.job.cancelled.set()  # `_begin` cancels the handle if it is not set yet
            handle = flight.handle
        if handle is not None:
            handle.cancel()
        self._fail_after_crash(flight.job, error)
        self._land(flight)

    def _flush_due(self) -> None:
        """Every flush interval, the tokens of all the replies being written go in one
        commit, even with no new token: a commit costs the whole server the same CPU time
        (the disk write, the projections, the streams woken) whatever it holds, so their
        number stays one per interval however many replies are written."""
        now = time.monotonic()
        if now - self._last_flush < self._tuning.flush_interval:
            return
        self._last_flush = now
        with self._lock:
            flights = list(self._flights.values())
        due = [(f, change) for f in flights
               if f.batch is not None and (change := f.batch.pending()) is not None]
        if not due:
            return
        try:
            refused = self._chat.change_replies(
                [(flight.job.session_id, change) for flight, change in due])
        except Exception:  # each on its own: the store may refuse only some (or none now)
            log.exception("recording the tokens of %d replies at once failed", len(due))
            for flight, _change in due:
                try:
                    self._committed(flight, flight.batch is not None and flight.batch.flush())
                except Exception as error:
                    self._recording_crashed(flight, error)
            return
        for (flight, _change), refusal in zip(due, refused, strict=True):
            assert flight.batch is not None
            if refusal is not None:
                log.info("reply %s: %s", flight.job.reply_id, refusal)
            flight.batch.committed(still_open=refusal is None)
            self._committed(flight, refusal is None)

    def _committed(self, flight: _Flight, still_open: bool) -> None:
        """After a batch took tokens: a reply that takes no more stops generating."""
        if not still_open and flight.handle is not None:
            flight.handle.cancel()  # the reply was ended elsewhere: stop writing it

    def _on_event(self, flight: _Flight, event: Event) -> None:
        batch = flight.batch
        assert batch is not None
        if isinstance(event, Started):
            flight.cached_tokens = event.reused_tokens
            self._record_start(flight)
        elif isinstance(event, Text):
            if flight.first_token_at is None and event.tokens:
                flight.first_token_at = time.monotonic() - flight.started
            self._committed(flight, batch.add(event.text, event.tokens))
        else:
            self._finish(flight, event)

    def _record_start(self, flight: _Flight) -> None:
        job, rid, prompt, batch = flight.job, flight.job.reply_id, flight.prompt, flight.batch
        assert prompt is not None and batch is not None
        if self._record(job, lambda s: s.start_reply(rid, len(prompt.tokens),
                                                     prompt.dropped_turns)):
            return
        # Ended elsewhere meanwhile (cancelled, deleted): stop writing it, record nothing.
        batch.open = False
        with self._lock:
            job.cancelled.set()  # `_begin` cancels the handle if it is not set yet
            handle = flight.handle
        if handle is not None:
            handle.cancel()

    def _finish(self, flight: _Flight, outcome: Done | Failed) -> None:
        job, rid, batch = flight.job, flight.job.reply_id, flight.batch
        assert batch is not None and flight.prompt is not None and flight.params is not None
        try:
            if not batch.flush():
                return
            seconds = time.monotonic() - flight.started
            self.recent.append(Generation(batch.token_count, seconds, flight.first_token_at))
            self.generations_total += 1
            self.tokens_total += batch.token_count
            if isinstance(outcome, Failed):
                code, message = outcome.code, outcome.message
                self._record(job, lambda s: s.fail_reply(rid, code, message))
            elif outcome.reason == "interrupted" or (outcome.reason == "cancelled"
                                                     and self._stopping):
                self._record(job, lambda s: s.interrupt_reply(rid))
            elif outcome.reason == "cancelled":
                self._record(job, lambda s: s.cancel_reply(rid))
            else:
                self._record(job, lambda s: s.complete_reply(
                    rid, **self._outcome(flight, batch.token_count, seconds, outcome.reason)))
        finally:
            self._land(flight)

    def _outcome(self, flight: _Flight, tokens: int, seconds: float,
                 finish: str) -> dict[str, Any]:
        engine, prompt, params = flight.engine, flight.prompt, flight.params
        assert engine is not None and prompt is not None and params is not None
        first = flight.first_token_at
        return {
            "token_count": tokens,
            "processing_time": round(seconds, 3),
            "time_to_first_token": None if first is None else round(first, 3),
            "model_version": engine.info.id,
            "model_params": {"temperature": params.temperature, "top_p": params.top_p,
                             "max_tokens": params.max_tokens, "n_ctx": engine.info.n_ctx,
                             "prompt_tokens": len(prompt.tokens),
                             "dropped_turns": prompt.dropped_turns,
                             "cached_tokens": flight.cached_tokens,
                             "recalled_message_ids": flight.recalled},
            "prompt_template": engine.info.prompt_template,
            "finish_reason": finish,
        }


class _TokenBatch:
    """Collects a reply's tokens until the actor commits them (with the other replies', once
    per flush interval) or the batch fills up (`flush_count`: committed on its own)."""

    def __init__(self, actor: InferenceActor, job: Job) -> None:
        self._actor, self._job = actor, job
        self._text: list[str] = []
        self._pending = 0
        self._committed_any = False
        self.token_count = 0
        self.open = True  # False once the reply can take no more tokens

    def add(self, text: str, tokens: int) -> bool:
        self._text.append(text)
        self._pending += tokens
        self.token_count += tokens
        # The first token at once: its reader sees the reply begin.
        if not self._committed_any or self._pending >= self._actor._tuning.flush_count:
            return self.flush()
        return self.open

    def pending(self) -> Callable[[ChatSession], None] | None:
        """The change recording the waiting tokens; None when there are none (or half a
        character, which waits for the rest), or the reply takes no more."""
        text, count, rid = "".join(self._text), self._pending, self._job.reply_id
        if not text or not self.open:
            return None
        return lambda session: session.add_tokens(rid, text, count)

    def committed(self, still_open: bool) -> None:
        """`pending()`'s change was recorded (or refused: the reply takes no more)."""
        self.open = still_open
        self._text, self._pending = [], 0
        self._committed_any = True

    def flush(self) -> bool:
        """Commit what is pending on its own; False if the reply can take no more tokens."""
        change = self.pending()
        if change is None:
            return self.open
        self.committed(self._actor._record(self._job, change))
        return self.open
