"""The generation queue shared by several web workers: it lives in the event store.

A queued reply is a `ReplyQueued` event on its chat. Every worker's actor queues the
replies its own requests record and, heard through the log (log_notify.py), those other
workers record. Before generating one, an actor claims it (`ReplyClaimed` with its worker
lock's key) with the store's own concurrency control: two workers racing both load the
chat at version N, only one save of N+1 is kept, the other reloads, finds the claim and
drops the reply. So a reply is generated once, by whichever actor had room first.

A worker that dies leaves its claimed replies open. The others keep the claims they heard
of and check every `SWEEP_SECONDS` whether their workers' locks can be taken
(worker_lock.py): a worker whose lock is free at two sweeps in a row is dead (one free
lock may be a worker reconnecting after a database restart, about to take it again), and
its replies are marked `interrupted`, keeping their text.
At start, the open replies are sorted the same way; unclaimed queued ones are queued here
too while other workers live, and interrupted when none does (the whole cluster stopped
with them: a restart interrupts them, as the one-process server does).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic

from app.cluster.log_notify import Event
from app.cluster.worker_lock import WorkerLock
from app.inference.actor import InferenceActor
from domain.application import ChatApplication
from domain.errors import DomainError
from domain.sessions import QUEUED, ChatSession

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
ENDINGS = ("ReplyCompleted", "ReplyFailed", "ReplyCancelled", "ReplyInterrupted")
# Whether this worker's engine can answer a chat set to this model (None: the default).
Serves = Callable[[str | None], bool]


class Declined(Exception):
    """This worker cannot generate the reply (no engine, or another model loaded)."""


class ReplyClaims:
    def __init__(self, chat: ChatApplication, actor: InferenceActor, lock: WorkerLock,
                 loop: asyncio.AbstractEventLoop, serves: Serves) -> None:
        self._chat = chat
        self._actor = actor
        self._lock = lock
        self._loop = loop
        self._serves = serves
        self._mutex = threading.Lock()
        # Open replies other workers claimed: reply id -> (session id, worker key).
        self._claims: dict[UUID, tuple[UUID, int]] = {}
        self._suspects: set[int] = set()  # workers whose lock was free at the last sweep
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> list[str]:
        """The events `heard` needs decoded."""
        names = ("ReplyQueued", "ReplyClaimed", *ENDINGS)
        return [get_topic(getattr(ChatSession, name)) for name in names]

    # -- the actor's side --------------------------------------------------------------------

    def claim(self, session_id: UUID, reply_id: UUID) -> bool:
        """Record that this worker generates the reply; False if another worker claimed
        it first, it ended, or this worker cannot serve it (actor worker thread)."""
        def take(session: ChatSession) -> None:
            if not self._serves(session.config.get("model")):
                raise Declined
            session.claim_reply(reply_id, self._lock.key, self._lock.name)
        try:
            self._chat.change_reply(session_id, take)
            return True
        except (DomainError, Declined) as why:
            log.info("reply %s left to another worker (%s)", reply_id,
                     why or "not served here")
            return False

    # -- other workers' commits (the log notifier's thread) ------------------------------------

    def heard(self, events: list[tuple[int, Event]]) -> None:
        for position, event in events:
            kind = type(event).__name__
            e: object = event
            reply_id: UUID = getattr(e, "reply_id")  # noqa: B009 (every event here has one)
            if kind == "ReplyQueued":
                self._offer(event.originator_id, reply_id, position)
            elif kind == "ReplyClaimed":
                worker: int = getattr(e, "worker_id")  # noqa: B009
                if worker != self._lock.key:  # a claim of ours, heard before its listener ran
                    with self._mutex:
                        self._claims[reply_id] = (event.originator_id, worker)
            else:  # an ending
                with self._mutex:
                    self._claims.pop(reply_id, None)

    def _offer(self, session_id: UUID, reply_id: UUID, position: int) -> None:
        """Queue another worker's reply here too, if this worker can generate it."""
        try:
            session = self._chat.get_session(session_id)
        except DomainError:
            return
        if not self._serves(session.config.get("model")):
            return
        self._loop.call_soon_threadsafe(self._actor.enqueue, session_id, reply_id, position,
                                        str(session.owner_id))

    # -- dead workers ------------------------------------------------------------------------

    def recover(self, open_replies: Iterable[tuple[UUID, UUID]], position: int) -> None:
        """At start: (session id, reply id) of every open reply, as the read models hold
        them at `position`. Replies of dead workers (and unclaimed ones left streaming)
        end as interrupted; live workers' claims are watched; unclaimed queued ones are
        queued here while another worker lives (it has them queued too), else
        interrupted."""
        others = self._lock.others_alive()
        for session_id, reply_id in open_replies:
            try:
                session = self._chat.get_session(session_id)
                claimed, status = (session.claimed_by(reply_id),
                                   session.open_reply(reply_id)["status"])
            except DomainError:
                continue  # ended meanwhile
            if claimed is None and status == QUEUED and others:
                self._actor_enqueue(session, reply_id, position)
            elif claimed is not None and not self._lock.is_dead(claimed):
                with self._mutex:
                    self._claims[reply_id] = (session_id, claimed)
            else:
                self._interrupt(session_id, reply_id, claimed)

    def _actor_enqueue(self, session: ChatSession, reply_id: UUID, position: int) -> None:
        self._loop.call_soon_threadsafe(self._actor.enqueue, session.id, reply_id, position,
                                        str(session.owner_id))

    def sweep(self) -> int:
        """Interrupt the replies claimed by workers found dead at this sweep and the one
        before; returns how many (the sweeper thread's)."""
        with self._mutex:
            by_worker: dict[int, list[tuple[UUID, UUID]]] = {}
            for reply_id, (session_id, worker) in self._claims.items():
                by_worker.setdefault(worker, []).append((session_id, reply_id))
        ended = 0
        suspects, self._suspects = self._suspects, set()
        for worker, replies in by_worker.items():
            if not self._lock.is_dead(worker):
                continue
            if worker not in suspects:
                self._suspects.add(worker)  # dead if still so at the next sweep
                continue
            for session_id, reply_id in replies:
                ended += self._interrupt(session_id, reply_id, worker)
                with self._mutex:
                    self._claims.pop(reply_id, None)
        return ended

    def _interrupt(self, session_id: UUID, reply_id: UUID, worker: int | None) -> int:
        try:
            self._chat.change_reply(session_id, lambda s: s.interrupt_reply(reply_id))
        except DomainError as error:  # ended meanwhile (another worker interrupted it)
            log.info("reply %s: %s", reply_id, error)
            return 0
        log.info("reply %s was left open by worker %s, gone; marked interrupted",
                 reply_id, worker)
        return 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sweep_loop, name="reply-sweep",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(SWEEP_SECONDS * 5)
            self._thread = None

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(SWEEP_SECONDS):
            try:
                self._lock.check()
                self.sweep()
            except psycopg.Error as error:  # the database away: again at the next sweep
                log.warning("sweeping dead workers' replies failed: %s", error)
            except Exception:
                log.exception("sweeping dead workers' replies failed")

    # -- cancelling (a request on this worker) -------------------------------------------------

    def cancel_elsewhere(self, session_id: UUID) -> list[UUID]:
        """Cancel the session's open replies this worker does not generate (after the
        actor withdrew its own): the worker generating one finds it ended at its next
        record and stops. Returns the reply ids cancelled."""
        try:
            session = self._chat.get_session(session_id)
        except DomainError:
            return []
        mine = self._lock.key
        others = [rid for rid in session.open_replies() if session.claimed_by(rid) != mine]
        cancelled = self._chat.cancel_replies([(session_id, rid) for rid in others])
        with self._mutex:
            for reply_id in cancelled:
                self._claims.pop(reply_id, None)
        return cancelled
