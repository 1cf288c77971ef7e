"""Export: every event of one user or one chat session, from the log itself.

A user's events are those of their account, their username claim, the admin seat changes
that name them, and every event of every chat they started (found from the chats' Started
events in the log, not from a read model that could lag or be wrong). Either store: the
functions take an `AuditLog` (app/audit/log.py), or a connection to the SQLite file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic

from app.audit.browse import resolve_user
from app.audit.log import AuditLog, as_log, decode
from app.event_log import LoggedEvent
from app.usecases.errors import NotFound
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex


def event_topic(aggregate: type, name: str) -> str:
    """The stored topic of one of an aggregate's event classes (made by @event)."""
    return get_topic(getattr(aggregate, name))


Log = sqlite3.Connection | AuditLog


def find_user(db: Log, mapper: Mapper[UUID], ref: str) -> UUID:
    """A user id from a UUID or a username, read from the log (InvalidInput if none)."""
    log = as_log(db)

    def first(originator_id: UUID) -> Sequence[Any] | None:
        record = log.first(originator_id)
        return astuple(record) if record is not None else None  # the columns' order
    return resolve_user(first, mapper, ref)


def sessions_of(db: Log, mapper: Mapper[UUID], user_id: UUID) -> list[UUID]:
    """The chats a user started (deleted ones too), oldest first."""
    found = []
    for record in as_log(db).with_topic(event_topic(ChatSession, "Started")):
        started: Any = decode(mapper, record).event
        if started.owner_id == user_id:
            found.append(UUID(record.originator_id))
    return found


def user_events(db: Log, mapper: Mapper[UUID], user_id: UUID) -> list[LoggedEvent]:
    log = as_log(db)
    first = log.first(user_id)
    if first is None or first.topic != event_topic(User, "Registered"):
        raise NotFound("user")
    registered: Any = decode(mapper, first).event
    own = [user_id, UsernameIndex.create_id(registered.username)]
    logged = [decode(mapper, r) for r in log.of_originators([*own, *sessions_of(
        log, mapper, user_id)])]
    seat = [decode(mapper, r) for r in log.of_originators([AdminSeat.create_id()])]
    logged += [e for e in seat if getattr(e.event, "user_id", None) == user_id]
    return sorted(logged, key=lambda e: e.position)


def session_events(db: Log, mapper: Mapper[UUID], session_id: UUID) -> list[LoggedEvent]:
    records = as_log(db).of_originators([session_id])
    if not records or not records[0].topic.endswith(":ChatSession.Started"):
        raise NotFound("session")
    return [decode(mapper, r) for r in records]
