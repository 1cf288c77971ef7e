"""Several web workers on one PostgreSQL event store (EVENT_STORE=postgresql://...).

Each worker hears the others' commits (log_notify.py: LISTEN/NOTIFY), holds a lock that
says it is alive (worker_lock.py) and shares the generation queue, which lives in the
event store (replies.py: claims). The SQLite store is one process and uses none of this.

What a worker keeps in its own DATA_DIR: the KV cache of its engine (`kv-cache`) and the
vector index (`chroma`, `vectors.sqlite`: each worker embeds the whole log itself); the
events and the read models are in PostgreSQL. What must be equal in all of them:
SECRET_KEY (it signs the CSRF tokens; left empty, each worker would generate its own
`DATA_DIR/secret_key` and reject the forms of pages another worker served), and the model
settings. Per worker, in memory: the sign-in and sign-up throttles and the per-user stream
cap (each worker counts its own). The queue is shared: every worker's actor holds every
queued reply it can serve, so MAX_QUEUE and MAX_QUEUED_PER_USER count the cluster's.

Started by app/services.py on a PostgreSQL store, instead of interrupting every open reply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import anyio

from app.cluster.log_notify import LogNotifier
from app.cluster.replies import ReplyClaims
from app.cluster.worker_lock import WorkerLock
from app.event_store import postgres_url
from projections import messages as messages_read

if TYPE_CHECKING:
    from app.services import Services

__all__ = ["Cluster", "start_cluster"]


@dataclass
class Cluster:
    lock: WorkerLock
    notifier: LogNotifier
    replies: ReplyClaims

    def stop(self) -> None:
        """After the actor stopped (its last records are made while the lock is held)."""
        self.replies.stop()
        self.notifier.stop()
        self.lock.release()


async def start_cluster(services: Services) -> Cluster:
    """Join the cluster: take a worker lock, follow the others' commits, share the queue,
    and sort the open replies (instead of `interrupt_open_replies`, which would interrupt
    the replies other live workers are generating). Call before the actor runs."""
    settings, actor, chat = services.settings, services.actor, services.chat
    url = postgres_url(settings)
    if url is None:
        raise ValueError("a cluster needs EVENT_STORE=postgresql://...")

    def serves(model: str | None) -> bool:
        engine = actor.engine
        if engine is None:
            return False
        if settings.engine_url or not model or model == engine.info.id:
            return True
        found = services.models.find(model)
        return found is None or found.id == engine.info.id  # a model gone: the loaded one

    lock = WorkerLock(url)
    await anyio.to_thread.run_sync(lock.acquire)
    replies = ReplyClaims(chat, actor, lock, asyncio.get_running_loop(), serves)
    actor.claim = replies.claim
    notifier = LogNotifier(url, chat, replies.topics, replies.heard)
    await anyio.to_thread.run_sync(notifier.start)
    position = await anyio.to_thread.run_sync(services.projections.catch_up)
    await services.settle(position)
    open_replies = await messages_read.open_replies(services.read_db)
    await anyio.to_thread.run_sync(
        replies.recover, [(UUID(s), UUID(r)) for s, r in open_replies], position)
    replies.start()
    return Cluster(lock, notifier, replies)
