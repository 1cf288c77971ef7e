"""An index of the log for the event browser: each position's type, user and time.

The event store can find one aggregate's events (its primary key) and positions (rowid),
but not "every ReplyFailed", "everything user U did" or "what happened on Tuesday" without
reading and decoding the whole log. This table answers those by index; the events
themselves are then read from the store by position.

`user_id` is the user an event belongs to: the user's own events, their username claim and
admin seat changes, and every event of the chats they own.

`at` is the event's timestamp, but never earlier than the `at` before it: two processes
(the server and the command line) may stamp events a few milliseconds out of log order, and
keeping `at` in log order makes a time range a range of positions, found by index.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from projections.batch import Batch, BatchProjection


def time_key(moment: datetime) -> str:
    """How `at` stores a time: ISO 8601 in UTC with microseconds, so text order is time order.

    (Event timestamps are UTC already; `isoformat` is several times faster than strftime.)"""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


class EventIndexProjection(BatchProjection):
    name = "event_index"
    tables = ("event_index", "event_owners")
    schema = """
    CREATE TABLE IF NOT EXISTS event_index (
        position INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        user_id TEXT,
        at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS event_index_by_type ON event_index (type, position);
    CREATE INDEX IF NOT EXISTS event_index_by_user ON event_index (user_id, position);
    CREATE INDEX IF NOT EXISTS event_index_by_time ON event_index (at);
    CREATE TABLE IF NOT EXISTS event_owners (
        originator_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL
    );
    """
    # Events that name their user in a field rather than by their aggregate.
    USER_FIELDS: ClassVar[dict[str, str]] = {
        "UsernameIndex.Claimed": "user_id",
        "AdminSeat.Claimed": "user_id",
        "AdminSeat.AdminAdded": "user_id",
        "AdminSeat.AdminRemoved": "user_id",
    }

    def __init__(self) -> None:
        self._owners: dict[UUID, str] = {}  # chat id -> owner, a cache of event_owners

    def clear(self, db: sqlite3.Connection) -> None:
        super().clear(db)
        self._owners.clear()

    def apply_batch(self, db: sqlite3.Connection, batch: Batch) -> None:
        rows, owners = [], []
        row = db.execute("SELECT at FROM event_index ORDER BY position DESC LIMIT 1").fetchone()
        latest = row[0] if row else ""
        for record, decoded in batch:
            event: Any = decoded  # every event of ours is an eventsourcing DomainEvent
            kind = type(event).__qualname__
            if kind == "ChatSession.Started":
                owner = str(event.owner_id)
                self._owners[event.originator_id] = owner
                owners.append((str(event.originator_id), owner))
            latest = max(latest, time_key(event.timestamp))
            rows.append((record.id, kind, self._user_of(db, kind, event), latest))
        db.executemany("INSERT OR REPLACE INTO event_owners VALUES (?, ?)", owners)
        db.executemany(
            "INSERT INTO event_index (position, type, user_id, at) VALUES (?, ?, ?, ?)", rows)

    def _user_of(self, db: sqlite3.Connection, kind: str, event: Any) -> str | None:
        if kind.startswith("User."):
            return str(event.originator_id)
        field = self.USER_FIELDS.get(kind)
        if field is not None:
            return str(getattr(event, field))
        owner = self._owners.get(event.originator_id)
        if owner is None and kind.startswith("ChatSession."):
            row = db.execute("SELECT user_id FROM event_owners WHERE originator_id = ?",
                             (str(event.originator_id),)).fetchone()
            if row is None:
                return None
            owner = self._owners[event.originator_id] = row[0]
        return owner
