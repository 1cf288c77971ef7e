"""A position that only grows (log head, projection progress) and a way to await it."""

from __future__ import annotations

import asyncio


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
