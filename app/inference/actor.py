"""The inference actor: the one owner of the engine, working through a queue of replies.

Jobs are replies already recorded as `queued`. The actor runs them one at a time in a
worker thread (the event loop never waits on the model) and records what happens as
events on the session: started, tokens in small batches, then completed, failed or
cancelled. Tokens are batched because every commit waits for the disk; the first token
is committed at once so the reader sees the reply begin without delay.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import anyio

from app.conversations import Conversation
from app.inference.engine import (
    ContextTooLong,
    Engine,
    Finished,
    SamplingParams,
    Token,
    Turn,
)
from domain.application import ChatApplication
from domain.errors import DomainError
from domain.sessions import ChatSession

log = logging.getLogger(__name__)

RECENT_WINDOW = 20  # generations remembered for tokens_per_second_recent


class QueueFull(Exception):
    pass


class ModelNotLoaded(Exception):
    pass


# Reads what a reply answers: (session_id, reply_id, position of its queueing).
ConversationSource = Callable[[UUID, UUID, int], Conversation]


@dataclass
class Job:
    session_id: UUID
    reply_id: UUID
    position: int
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


class InferenceActor:
    def __init__(self, chat: ChatApplication, conversations: ConversationSource,
                 tuning: Tuning) -> None:
        self._chat = chat
        self._conversations = conversations
        self._tuning = tuning
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self.recent: deque[Generation] = deque(maxlen=RECENT_WINDOW)
        self.generations_total = 0
        self.tokens_total = 0
        self._stopping = False

    # -- the queue (called from request handlers) ----------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def generating(self) -> bool:
        return self._running is not None

    def next_position(self) -> int:
        """The queue position a reply queued now would get (1 = starts next)."""
        if self.engine is None:
            raise ModelNotLoaded(self.load_error or "The model is not loaded.")
        with self._lock:
            if len(self._waiting) >= self._tuning.max_queue:
                raise QueueFull(f"{len(self._waiting)} replies are already waiting.")
            return len(self._waiting) + (1 if self._running else 0) + 1

    def enqueue(self, session_id: UUID, reply_id: UUID, position: int) -> None:
        """Queue a reply recorded as queued at log `position`."""
        with self._lock:
            self._waiting.append(Job(session_id, reply_id, position))
        self._wakeup.set()

    def withdraw(self, session_id: UUID) -> tuple[list[UUID], bool]:
        """Take a session's replies off the queue and signal its running reply to stop.

        Returns the withdrawn reply ids (the caller records them as cancelled) and whether
        a running reply was signalled (the actor records that one itself).
        """
        with self._lock:
            withdrawn = [job for job in self._waiting if job.session_id == session_id]
            for job in withdrawn:
                self._waiting.remove(job)
            running = self._running
            signalled = running is not None and running.session_id == session_id
            if signalled and running is not None:
                running.cancelled.set()
        return [job.reply_id for job in withdrawn], signalled

    def shutdown(self) -> None:
        """Stop the running reply; it is recorded as interrupted, keeping its text."""
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running.cancelled.set()

    def tokens_per_second_recent(self) -> float:
        tokens = sum(g.tokens for g in self.recent)
        seconds = sum(g.seconds for g in self.recent)
        return round(tokens / seconds, 2) if seconds else 0.0

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with self._lock:
                job = self._waiting.popleft() if self._waiting else None
                self._running = job
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await anyio.to_thread.run_sync(self._generate, job, abandon_on_cancel=False)
            except Exception as error:
                log.exception("generation of reply %s crashed", job.reply_id)
                await anyio.to_thread.run_sync(self._fail_after_crash, job, error)
            finally:
                with self._lock:
                    self._running = None

    # -- one generation (worker thread) ---------------------------------------------------

    def _record(self, job: Job, change: Callable[[ChatSession], None]) -> bool:
        try:
            self._chat.change_reply(job.session_id, change)
            return True
        except DomainError as error:  # e.g. the reply was already ended elsewhere
            log.info("reply %s: %s", job.reply_id, error)
            return False

    def _fail_after_crash(self, job: Job, error: Exception) -> None:
        """Never leave a reply open: end it as failed (its text so far stays in the log)."""
        reason = f"The server failed while writing this reply: {error}"
        try:
            self._record(job, lambda s: s.fail_reply(job.reply_id, "internal_error", reason))
        except Exception:
            log.exception("could not record the failure of reply %s", job.reply_id)

    def _generate(self, job: Job) -> None:
        engine, rid = self.engine, job.reply_id
        if engine is None:
            self._record(job, lambda s: s.fail_reply(rid, "model_not_loaded",
                                                     "The model is not loaded."))
            return
        if job.cancelled.is_set():
            self._record(job, lambda s: s.cancel_reply(rid))
            return
        conversation = self._conversations(job.session_id, rid, job.position)
        config = conversation.config
        history = [Turn(role, content) for _id, role, content in conversation.turns]
        params = SamplingParams(
            temperature=config["temperature"], top_p=config["top_p"],
            max_tokens=config["max_tokens"],
        )
        try:
            prompt = engine.prepare(config["system_prompt"], history, params.max_tokens)
        except ContextTooLong as error:
            reason = str(error)
            self._record(job, lambda s: s.fail_reply(rid, "context_too_long", reason))
            return
        if not self._record(job, lambda s: s.start_reply(rid, len(prompt.tokens),
                                                         prompt.dropped_turns)):
            return
        batch = _TokenBatch(self, job)
        started = time.monotonic()
        deadline = started + self._tuning.timeout
        finish, first_token_at = "stop", None
        try:
            for item in engine.stream(prompt, SamplingParams(
                params.temperature, params.top_p, prompt.max_tokens
            )):
                if isinstance(item, Finished):
                    finish = item.reason
                    break
                if first_token_at is None:
                    first_token_at = time.monotonic() - started
                batch.add(item)
                if job.cancelled.is_set():
                    finish = "cancelled"
                    break
                if time.monotonic() > deadline:
                    finish = "timeout"
                    break
            if not batch.flush():
                return
        except Exception as error:
            log.exception("engine failed on reply %s", rid)
            batch.flush()
            reason = f"The model failed: {error}"
            self._record(job, lambda s: s.fail_reply(rid, "generation_failed", reason))
            return
        seconds = time.monotonic() - started
        self.recent.append(Generation(batch.token_count, seconds, first_token_at))
        self.generations_total += 1
        self.tokens_total += batch.token_count
        if finish == "cancelled" and self._stopping:
            self._record(job, lambda s: s.interrupt_reply(rid))
        elif finish == "cancelled":
            self._record(job, lambda s: s.cancel_reply(rid))
        elif finish == "timeout":
            self._record(job, lambda s: s.fail_reply(
                rid, "timeout", f"The reply took longer than {self._tuning.timeout:g} seconds."))
        else:
            self._record(job, lambda s: s.complete_reply(
                rid,
                token_count=batch.token_count,
                processing_time=round(seconds, 3),
                time_to_first_token=None if first_token_at is None else round(first_token_at, 3),
                model_version=engine.info.id,
                model_params={"temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens, "n_ctx": engine.info.n_ctx,
                              "prompt_tokens": len(prompt.tokens),
                              "dropped_turns": prompt.dropped_turns},
                prompt_template=engine.info.prompt_template,
                finish_reason=finish,
            ))


class _TokenBatch:
    """Collects tokens and commits them as one event per few tokens or milliseconds."""

    def __init__(self, actor: InferenceActor, job: Job) -> None:
        self._actor, self._job = actor, job
        self._text: list[str] = []
        self._pending = 0
        self._committed_any = False
        self._last_flush = time.monotonic()
        self.token_count = 0

    def add(self, token: Token) -> None:
        self._text.append(token.text)
        self._pending += 1
        self.token_count += 1
        tuning = self._actor._tuning
        due = (
            not self._committed_any
            or self._pending >= tuning.flush_count
            or time.monotonic() - self._last_flush >= tuning.flush_interval
        )
        if due and "".join(self._text):
            self.flush()

    def flush(self) -> bool:
        """Commit what is pending; False if the reply can take no more tokens."""
        text, count = "".join(self._text), self._pending
        if not count:
            return True
        if not text:  # only an incomplete character so far; it travels with the next token
            return True
        rid = self._job.reply_id
        ok = self._actor._record(self._job, lambda s: s.add_tokens(rid, text, count))
        self._text, self._pending = [], 0
        self._committed_any = True
        self._last_flush = time.monotonic()
        return ok
