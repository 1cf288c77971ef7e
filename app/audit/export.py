"""Export: every event of one user or one chat session, from the log itself.

A user's events are those of their account, their username claim, the admin seat changes
that name them, and every event of every chat they started (found from the chats' Started
events in the log, not from a read model that could lag or be wrong).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic

from app.audit.log import COLUMNS, Record, decode, of_originators, to_record
from app.event_log import LoggedEvent
from app.usecases.errors import NotFound
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex


def event_topic(aggregate: type, name: str) -> str:
    """The stored topic of one of an aggregate's event classes (made by @event)."""
    return get_topic(getattr(aggregate, name))


def _by_topic(db: sqlite3.Connection, topic: str) -> Iterator[Record]:
    for row in db.execute(f"SELECT {COLUMNS} FROM stored_events WHERE topic = ?"
                          " ORDER BY rowid", (topic,)):
        yield to_record(row)


def sessions_of(db: sqlite3.Connection, mapper: Mapper[UUID], user_id: UUID) -> list[UUID]:
    """The chats a user started (deleted ones too), oldest first."""
    found = []
    for record in _by_topic(db, event_topic(ChatSession, "Started")):
        started: Any = decode(mapper, record).event
        if started.owner_id == user_id:
            found.append(UUID(record.originator_id))
    return found


def user_events(db: sqlite3.Connection, mapper: Mapper[UUID],
                user_id: UUID) -> list[LoggedEvent]:
    first = db.execute("SELECT topic, state FROM stored_events WHERE originator_id = ?"
                       " AND originator_version = 1", (user_id.hex,)).fetchone()
    if first is None or first[0] != event_topic(User, "Registered"):
        raise NotFound("user")
    registered: Any = decode(mapper, to_record(db.execute(
        f"SELECT {COLUMNS} FROM stored_events WHERE originator_id = ?"
        " AND originator_version = 1", (user_id.hex,)).fetchone())).event
    own = [user_id, UsernameIndex.create_id(registered.username)]
    logged = [decode(mapper, r) for r in of_originators(db, [*own, *sessions_of(
        db, mapper, user_id)])]
    seat = [decode(mapper, r) for r in of_originators(db, [AdminSeat.create_id()])]
    logged += [e for e in seat if getattr(e.event, "user_id", None) == user_id]
    return sorted(logged, key=lambda e: e.position)


def session_events(db: sqlite3.Connection, mapper: Mapper[UUID],
                   session_id: UUID) -> list[LoggedEvent]:
    records = of_originators(db, [session_id])
    if not records or not records[0].topic.endswith(":ChatSession.Started"):
        raise NotFound("session")
    return [decode(mapper, r) for r in records]
