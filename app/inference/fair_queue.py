"""A queue that takes turns between users, so one user's many replies cannot starve another.

Each user has a line of their own, oldest first; `pop` serves the first user in the round
who has an item that may start now, and sends that user to the back of the round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._lines: dict[str, deque[T]] = {}
        self._round: deque[str] = deque()  # users with something waiting, next to serve first
        self._size = 0  # kept, not summed: read from other threads without the owner's lock

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        for user in self._round:
            yield from self._lines[user]

    def count(self, user: str) -> int:
        return len(self._lines.get(user, ()))

    def push(self, user: str, item: T) -> None:
        if user not in self._lines:
            self._lines[user] = deque()
            self._round.append(user)
        self._lines[user].append(item)
        self._size += 1

    def pop(self, eligible: Callable[[T], bool] = lambda _: True) -> T | None:
        """The oldest eligible item of the first user in the round who has one."""
        for user in list(self._round):
            line = self._lines[user]
            item = next((i for i in line if eligible(i)), None)
            if item is None:
                continue  # this user keeps their place in the round
            line.remove(item)
            self._size -= 1
            self._round.remove(user)
            if line:
                self._round.append(user)
            else:
                del self._lines[user]
            return item
        return None

    def remove(self, matches: Callable[[T], bool]) -> list[T]:
        removed = []
        for user in list(self._round):
            line = self._lines[user]
            gone = [item for item in line if matches(item)]
            for item in gone:
                line.remove(item)
                self._size -= 1
            removed.extend(gone)
            if not line:
                del self._lines[user]
                self._round.remove(user)
        return removed

    def in_turn_order(self) -> list[T]:
        """Every waiting item in the order `pop` serves them when all may start: each
        user's oldest in round order, then each user's second, and so on."""
        lines = [self._lines[user] for user in self._round]
        order: list[T] = []
        for depth in range(max((len(line) for line in lines), default=0)):
            order += [line[depth] for line in lines if depth < len(line)]
        return order

    def ahead_of_new(self, user: str) -> int:
        """How many waiting items would start before one `user` adds now: their own, and
        from each other user one per round until the new item's turn (users ahead of
        `user` in the round have one more turn than those behind)."""
        own = self.count(user)
        place = self._round.index(user) if user in self._lines else len(self._round)
        return own + sum(min(len(self._lines[other]), own + (1 if n < place else 0))
                         for n, other in enumerate(self._round) if other != user)
