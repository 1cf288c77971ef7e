"""One read of the log per commit for every stream that watches a chat.

Followed per stream, a commit in a chat that N streams watch was N reads of the log
(docs/benchmarks.md, "Idle SSE clients per worker"). Here each watched chat has a feed: one
task that reads the chat's new events once per change and hands the same decoded events to
every subscribed stream's queue (as `QueueMoves` does for the pages' signals).

A stream first catches up on its own, from its `Last-Event-ID` (`join` after each read of
its own); it joins the feed when it has every event the feed has not yet handed out, so
it gets each event exactly once, in log order:
- the feed is behind the stream (its read is under way): the stream joins and skips the
  events it already has;
- the feed is ahead: the events between come from the feed's recent ones (`KEEP`), or the
  stream reads the log again (then it has everything up to where the feed was before that
  read, since the feed had read it: the log's positions become visible in order).
A stream whose queue reaches `BOUND` (a client that stopped reading) is dropped from the
feed and reads the log itself again once it drains its queue: the others never wait for
it, it loses nothing, and it needs no reconnection (the internal followers of
app/usecases/llm.py could not reconnect). A feed ends with its last stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from uuid import UUID

from app.event_log import LoggedEvent
from app.event_store import EventLogReader
from app.watch import ChangeWatch, PositionWatch

log = logging.getLogger(__name__)

READ_BATCH = 1000
BOUND = 1000  # events waiting for one stream; one read of the log catches them up
KEEP = 256  # recent events a feed keeps for streams joining it a little behind
RETRY_SECONDS = 1.0  # after a failed read, before the feed's streams read for themselves


class Subscription:
    """One stream's place: the events a feed handed it, not yet sent."""

    __slots__ = ("after", "feed", "queue", "wake")

    def __init__(self, after: int) -> None:
        self.after = after  # the stream has every event of the chat up to this position
        self.queue: deque[LoggedEvent] = deque()
        self.feed: ChatFeed | None = None  # None: the stream reads the log itself
        self.wake: asyncio.Event | None = None  # set when the queue grows or the feed drops it

    def _put(self, logged: LoggedEvent) -> None:
        self.queue.append(logged)
        if self.wake is not None:
            self.wake.set()


class ChatFeed:
    """The one reader of a chat's new events for the streams subscribed to it."""

    def __init__(self, hub: ChatFeeds, chat_id: UUID, read_to: int) -> None:
        self.hub = hub
        self.chat_id = chat_id
        self.read_to = read_to  # every event up to here was handed out (or read by joiners)
        self.kept_from = read_to  # `recent` holds every event after this, up to read_to
        self.recent: deque[LoggedEvent] = deque()
        self.subscribers: set[Subscription] = set()
        self.closed = False
        self._waiter: asyncio.Event | None = None
        self.task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"chat feed {chat_id}")

    def add(self, sub: Subscription) -> bool:
        """Subscribe a stream that has every event up to `sub.after`, if the events between
        that and what this feed hands out next are known here; False: read the log first."""
        if sub.after < self.read_to:
            if sub.after < self.kept_from:
                return False
            for logged in self.recent:
                if logged.position > sub.after:
                    sub._put(logged)
        sub.feed = self
        self.subscribers.add(sub)
        return True

    def _deliver(self, logged: LoggedEvent) -> None:
        self.read_to = logged.position
        self.recent.append(logged)
        if len(self.recent) > self.hub.keep:
            self.kept_from = self.recent.popleft().position
        for sub in list(self.subscribers):
            if sub.feed is not self:
                continue  # left while this event was handed out
            if logged.position <= sub.after:
                continue  # it read this one itself before joining
            if len(sub.queue) >= self.hub.bound:
                self.hub.drop(sub)  # it reads the log itself from its last queued event
                continue
            sub._put(logged)

    async def _follow(self) -> None:
        changes, event_log = self.hub.changes, self.hub.event_log
        try:
            while not self.closed:
                # Subscribed before reading: a commit landing during the read is not missed.
                waiter = self._waiter = changes.subscribe(self.chat_id)
                try:
                    batch = await event_log.of_originator(self.chat_id, self.read_to,
                                                          READ_BATCH)
                    if self.closed:
                        return
                    for logged in batch:
                        self._deliver(logged)
                    if len(batch) < READ_BATCH:
                        await waiter.wait()
                finally:
                    changes.unsubscribe(waiter, self.chat_id)
        except Exception:  # each stream reads for itself again, and meets the error there
            log.exception("chat feed %s: reading the log failed", self.chat_id)
            # Not at once: a stream whose own read works would start a new feed at once,
            # which may fail the same way, in a loop.
            await asyncio.sleep(RETRY_SECONDS)
            self.hub.close(self)

    def stop(self) -> None:
        self.closed = True
        if self._waiter is not None:
            self._waiter.set()  # out of its wait; a read under way is left to finish


class ChatFeeds:
    """The feeds of the chats that open streams watch, one per chat."""

    def __init__(self, event_log: EventLogReader, changes: ChangeWatch, head: PositionWatch,
                 bound: int = BOUND, keep: int = KEEP) -> None:
        self.event_log = event_log
        self.changes = changes
        self.head = head
        self.bound = bound
        self.keep = keep
        self.feeds: dict[UUID, ChatFeed] = {}

    def floor(self, chat_id: UUID) -> int:
        """Where the chat's feed has read to (-1: no feed). Taken before a stream reads the
        log, the stream has every event up to it once that read is done."""
        feed = self.feeds.get(chat_id)
        return feed.read_to if feed is not None else -1

    def join(self, chat_id: UUID, sub: Subscription, floor: int) -> bool:
        """After the stream read the log up to its end (nothing more when it read): join
        the chat's feed (starting one if none), or False when the stream must read again.
        `floor` is `floor(chat_id)` from before that read."""
        sub.after = max(sub.after, floor)
        feed = self.feeds.get(chat_id)
        if feed is None:
            # Not beyond the log's head (a client may send any id): the feed's position is
            # one other streams may rely on (`floor`); this stream skips what it has.
            feed = self.feeds[chat_id] = ChatFeed(self, chat_id,
                                                  min(sub.after, self.head.position))
        return feed.add(sub)

    def leave(self, sub: Subscription) -> None:
        feed, sub.feed = sub.feed, None
        if feed is not None:
            feed.subscribers.discard(sub)
            if not feed.subscribers:
                self.close(feed)

    def drop(self, sub: Subscription) -> None:
        """The feed no longer serves this stream: it reads the log itself again."""
        self.leave(sub)
        if sub.wake is not None:
            sub.wake.set()

    def close(self, feed: ChatFeed) -> None:
        feed.stop()
        if self.feeds.get(feed.chat_id) is feed:
            del self.feeds[feed.chat_id]
        subscribers, feed.subscribers = feed.subscribers, set()
        for sub in subscribers:
            sub.feed = None
            if sub.wake is not None:
                sub.wake.set()


Wait = Callable[[Subscription], Awaitable[bool]]


async def _wait_quietly(sub: Subscription) -> bool:
    sub.wake = asyncio.Event()
    try:
        await sub.wake.wait()
    finally:
        sub.wake = None
    return True


def _deleted(logged: LoggedEvent) -> bool:
    return logged.kind == "Deleted"


async def follow(feeds: ChatFeeds, chat_id: UUID, sub: Subscription, wait: Wait | None = None
                 ) -> AsyncGenerator[LoggedEvent, None]:
    """Every event of the chat after `sub.after` in log order, then each new one as it
    commits, until the chat's deletion. `wait(sub)` waits until `sub.wake` is set (it sets
    it) and says whether the stream goes on (the caller's checks of its user)."""
    try:
        while True:
            # On its own: the log from the stream's position to its end, then the feed.
            floor = feeds.floor(chat_id)
            batch = await feeds.event_log.of_originator(chat_id, sub.after, READ_BATCH)
            for logged in batch:
                sub.after = logged.position
                yield logged
                if _deleted(logged):
                    return
            if len(batch) == READ_BATCH or not feeds.join(chat_id, sub, floor):
                continue
            while sub.feed is not None or sub.queue:
                if sub.queue:
                    logged = sub.queue.popleft()
                    sub.after = logged.position
                    yield logged
                    if _deleted(logged):
                        return
                elif not await (wait or _wait_quietly)(sub):
                    return
            # Dropped by the feed (it fell behind, or the feed failed): the log again.
    finally:
        feeds.leave(sub)
