"""An index of the log for the event browser: each position's type, user and time.

The event store can find one aggregate's events (its primary key) and positions (rowid),
but not "every ReplyFailed", "everything user U did" or "what happened on Tuesday" without
reading and decoding the whole log. This table answers those by index; the events
themselves are then read from the store by position.

- `type` and `user` are small numbers (`event_types`, `event_users` name them): the two
  indexes stay small, which is most of what a million-event rebuild spends here. Numbers
  are handed out in log order, so a rebuild writes the same ones.
- `user` is the user an event belongs to: the user's own events, their username claim
  and admin seat changes, and every event of the chats they own (`event_owners`).
- `at` is the event's timestamp, but never earlier than the `at` before it: two processes
  (the server and the command line) may stamp events a few milliseconds out of log order,
  and keeping `at` in log order makes a time range a range of positions, found by a
  binary search on the primary key (`position_at`) with no index of its own.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

from projections.batch import Batch, BatchProjection

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


def time_key(moment: datetime) -> int:
    """How `at` stores a time: microseconds since 1970 (UTC). Cheaper to make, store and
    compare than text; the events themselves keep their full timestamps."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // ONE_MICROSECOND


class EventIndexProjection(BatchProjection):
    name = "event_index"
    version = 3  # v2: numbered types and users, no index on `at`; v3: `at` in microseconds
    tables = ("event_index", "event_types", "event_users", "event_owners")
    schema = """
    CREATE TABLE IF NOT EXISTS event_index (
        position INTEGER PRIMARY KEY,
        type INTEGER NOT NULL,
        user INTEGER,
        at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS event_index_by_type ON event_index (type, position);
    CREATE INDEX IF NOT EXISTS event_index_by_user ON event_index (user, position);
    CREATE TABLE IF NOT EXISTS event_types (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS event_users (
        id INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS event_owners (
        originator_id TEXT PRIMARY KEY,
        user INTEGER NOT NULL
    );
    """
    # `user` is a reserved word in PostgreSQL (the current role): always quote it there.
    postgres_schema = """
    CREATE TABLE IF NOT EXISTS event_index (
        position BIGINT PRIMARY KEY,
        type BIGINT NOT NULL,
        "user" BIGINT,
        at BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS event_index_by_type ON event_index (type, position);
    CREATE INDEX IF NOT EXISTS event_index_by_user ON event_index ("user", position);
    CREATE TABLE IF NOT EXISTS event_types (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS event_users (
        id BIGINT PRIMARY KEY,
        user_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS event_owners (
        originator_id TEXT PRIMARY KEY,
        "user" BIGINT NOT NULL
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
        # Caches of the three small tables, checked against them at every batch (a batch
        # rolled back would otherwise leave numbers here that the tables do not have).
        self._types: dict[str, int] = {}
        self._users: dict[UUID, int] = {}
        self._owners: dict[int, int] = {}  # by chat id's `.int` (UUID hashes in Python)
        # event class -> (its name, its number, `_user_field`); emptied with the numbers
        self._classes: dict[type, tuple[str, int, str | None]] = {}

    def clear(self, db: sqlite3.Connection) -> None:
        super().clear(db)
        self._classes.clear()
        self._types.clear()
        self._users.clear()
        self._owners.clear()

    def _load(self, db: sqlite3.Connection) -> None:
        sizes = db.execute("SELECT (SELECT COUNT(*) FROM event_types),"
                           " (SELECT COUNT(*) FROM event_users),"
                           " (SELECT COUNT(*) FROM event_owners)").fetchone()
        if sizes == (len(self._types), len(self._users), len(self._owners)):
            return
        self._classes = {}
        self._types = {name: i for i, name in db.execute("SELECT id, name FROM event_types")}
        self._users = {UUID(u): i for i, u in db.execute("SELECT id, user_id FROM event_users")}
        self._owners = {UUID(o).int: u for o, u in
                        db.execute('SELECT originator_id, "user" FROM event_owners')}

    def apply(self, db: sqlite3.Connection, event: Any, position: int) -> None:
        raise TypeError(f"{self.name} is applied by batches: use apply_batch")

    def apply_batch(self, db: sqlite3.Connection, batch: Batch) -> None:
        self._load(db)
        types, users, owners = self._types, self._users, self._owners
        classes = self._classes
        new_types, new_users, new_owners, rows = [], [], [], []
        row = db.execute("SELECT at FROM event_index ORDER BY position DESC LIMIT 1").fetchone()
        latest = row[0] if row else 0
        for record, decoded in batch:
            event: Any = decoded  # every event of ours is an eventsourcing DomainEvent
            cls = type(event)
            known = classes.get(cls)
            if known is None:  # per class, not per event: its name, number and user field
                kind = cls.__qualname__
                code = types.get(kind)
                if code is None:
                    code = types[kind] = len(types) + 1
                    new_types.append((code, kind))
                known = classes[cls] = (kind, code, self._user_field(kind))
            kind, code, field = known
            if field is None:  # a chat's event: its owner's
                user = owners.get(event.originator_id.int)
            elif not field:  # nobody's
                user = None
            else:
                user_id = getattr(event, field)
                user = users.get(user_id)
                if user is None:
                    user = users[user_id] = len(users) + 1
                    new_users.append((user, str(user_id)))
                if kind == "ChatSession.Started":
                    owners[event.originator_id.int] = user
                    new_owners.append((str(event.originator_id), user))
            moment = event.timestamp
            stamp = ((moment - EPOCH) // ONE_MICROSECOND if moment.tzinfo is not None
                     else time_key(moment))
            if stamp > latest:
                latest = stamp
            rows.append((record.id, code, user, latest))
        db.executemany("INSERT INTO event_types VALUES (?, ?)", new_types)
        db.executemany("INSERT INTO event_users VALUES (?, ?)", new_users)
        db.executemany('INSERT INTO event_owners VALUES (?, ?) ON CONFLICT (originator_id)'
                       ' DO UPDATE SET "user" = excluded."user"', new_owners)
        db.executemany("INSERT INTO event_index VALUES (?, ?, ?, ?)", rows)

    def _user_field(self, kind: str) -> str | None:
        """The field naming an event's user; None: its chat's owner; "": nobody."""
        if kind.startswith("User."):
            return "originator_id"
        if kind == "ChatSession.Started":
            return "owner_id"
        return self.USER_FIELDS.get(kind, None if kind.startswith("ChatSession.") else "")


def position_at(db: sqlite3.Connection, moment: datetime, table: str = "event_index") -> int:
    """A position p such that every event before p has `at` < moment and the first one from
    p on (if any) has `at` >= moment: a binary search, as `at` never decreases along the log.
    """
    key = time_key(moment)
    # Two subqueries: SQLite finds a lone MIN or MAX by the key, but both at once by a scan.
    row = db.execute(f"SELECT (SELECT MIN(position) FROM {table}),"
                     f" (SELECT MAX(position) FROM {table})").fetchone()
    if row[0] is None:
        return 1
    low, high = int(row[0]), int(row[1]) + 1
    while low < high:
        middle = (low + high) // 2
        position, at = db.execute(f"SELECT position, at FROM {table} WHERE position >= ?"
                                  " ORDER BY position LIMIT 1", (middle,)).fetchone()
        if at >= key:
            high = middle  # nothing lies between middle and `position`
        else:
            low = position + 1
    return low
