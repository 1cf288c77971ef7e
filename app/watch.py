"""Waiting for the log: a position that only grows (log head, projection progress), the
aggregates each commit changed, and the streams open per user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from uuid import UUID


class PositionWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, position: int = 0) -> None:
        self._loop = loop
        self.position = position
        self._changed = asyncio.Event()

    def advance_threadsafe(self, position: int) -> None:
        """Callable from any thread, e.g. right after a commit."""
        self._loop.call_soon_threadsafe(self.advance, position)

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the position passes `position`; False on timeout."""
        return await self.wait_until(position + 1, timeout)

    async def wait_until(self, position: int, timeout: float) -> bool:
        """Wait until the position reaches `position`; False on timeout."""
        deadline = self._loop.time() + timeout
        while self.position < position:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True


class ChangeWatch:
    """Which aggregates a commit changed, so a stream wakes only for its own chat (and its
    user), instead of every open stream re-reading the log after every commit."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[UUID, set[asyncio.Event]] = {}

    def changed_threadsafe(self, _head: int, ids: Iterable[UUID]) -> None:
        """Callable from any thread, right after a commit of events of these aggregates."""
        changed = list(ids)
        self._loop.call_soon_threadsafe(self._changed, changed)

    def _changed(self, ids: list[UUID]) -> None:
        for aggregate_id in ids:
            for waiter in self._waiters.pop(aggregate_id, ()):
                waiter.set()

    def subscribe(self, *ids: UUID) -> asyncio.Event:
        """An event set at the next change of any of `ids`. Subscribe before reading, so
        a change landing between the read and the wait is not missed."""
        waiter = asyncio.Event()
        for aggregate_id in ids:
            self._waiters.setdefault(aggregate_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, waiter: asyncio.Event, *ids: UUID) -> None:
        for aggregate_id in ids:
            waiters = self._waiters.get(aggregate_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[aggregate_id]

    @property
    def watched(self) -> int:
        return len(self._waiters)


class StreamCounter:
    """Open streams per user, for a per-user cap."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def full(self, user_id: str) -> bool:
        return self._open.get(user_id, 0) >= self.per_user

    def open(self, user_id: str) -> bool:
        if self.full(user_id):
            return False
        self._open[user_id] = self._open.get(user_id, 0) + 1
        return True

    def close(self, user_id: str) -> None:
        left = self._open.get(user_id, 0) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)
