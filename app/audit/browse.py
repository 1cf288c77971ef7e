"""The event browser's query: the log filtered by type, aggregate, user and time range.

Shared by the admin pages and `localchat events list|tail`. Positions are found by index
(the `event_index` projection for type, user and time; the store's primary key for one
aggregate), then the events are read from the log by position and decoded. On a log of a
million events every filter answers in milliseconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import Mapper

from app.audit.log import COLUMNS, decode, head, to_record
from app.event_log import LoggedEvent
from app.usecases.errors import N_, InvalidInput, Message
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex
from projections.event_index import position_at

AGGREGATES = (User, UsernameIndex, AdminSeat, ChatSession)


@cache
def known_types() -> tuple[str, ...]:
    """Every event type the domain records, as "Aggregate.Event"."""
    found = []
    for aggregate in AGGREGATES:
        for name, value in vars(aggregate).items():
            if (isinstance(value, type) and issubclass(value, CanMutateAggregate)
                    and name not in ("Event", "Created")):
                found.append(value.__qualname__)
    return tuple(sorted(found))


def resolve_type(name: str) -> list[str]:
    """ "ReplyFailed" or "ChatSession.ReplyFailed" -> the qualified names it means."""
    matches = [t for t in known_types() if name in (t, t.split(".", 1)[1])]
    if not matches:
        bare = sorted({t.split(".", 1)[1] for t in known_types()})
        raise InvalidInput("type", Message(N_("%(name)s is no event type; known: %(known)s"),
                                           {"name": repr(name), "known": ", ".join(bare)}))
    return matches


def parse_time(text: str, field_name: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC unless it says otherwise) or an age such
    as "90s", "15m", "2h", "7d" (that long before now)."""
    text = text.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return (now or datetime.now(UTC)) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(field_name, N_("must be a time like 2026-11-24, 2026-11-24T09:30"
                                          " or an age like 2h or 7d.")) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass
class EventFilter:
    types: list[str] = field(default_factory=list)  # qualified names; empty: all types
    aggregate: UUID | None = None
    user: UUID | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


class EventBrowser:
    """Queries over one data directory: the read models with the event store attached."""

    # What reading a read model that was never created raises.
    no_table: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def __init__(self, read_model_path: Path, event_store_path: Path,
                 mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        # Without read models (never started, or removed) the log alone still lists;
        # filters then fail on the missing index, which callers report.
        main = f"file:{read_model_path}?mode=ro" if read_model_path.is_file() else ":memory:"
        # The read models: this SQLite file here, PostgreSQL's in browse_pg (same SQL).
        self.db: Any = sqlite3.connect(main, uri=True, check_same_thread=False)
        self.db.execute("ATTACH DATABASE ? AS log", (f"file:{event_store_path}?mode=ro",))

    def close(self) -> None:
        self.db.close()

    def find_user(self, ref: str) -> UUID:
        """A user id from a UUID or a username (InvalidInput if there is none)."""
        return user_by_name_or_id(self.db, self.mapper, ref)

    def log_head(self) -> int:
        return head(self.db)

    def index_head(self) -> int:
        """The last position the event index has taken in (filters see up to here)."""
        try:
            row = self.db.execute("SELECT position FROM projection_positions"
                                  " WHERE name = 'event_index'").fetchone()
        except self.no_table:  # no read models yet
            return 0
        return int(row[0]) if row else 0

    def select(self, where: EventFilter, after: int = 0, before: int | None = None,
               limit: int = 100, newest_first: bool = False) -> list[LoggedEvent]:
        """Matching events with after < position < before, oldest first (or the newest
        `limit` of them with `newest_first`, still returned oldest first)."""
        positions = self.positions(where, after, before, limit, newest_first)
        if not positions:
            return []
        return [decode(self.mapper, to_record(row)) for row in self._rows(positions)]

    # -- the parts that read the log itself (app/audit/browse_pg.py reads PostgreSQL) -----

    def _rows(self, positions: list[int]) -> list[Any]:
        marks = ",".join("?" * len(positions))
        return self.db.execute(
            f"SELECT {COLUMNS} FROM log.stored_events WHERE rowid IN ({marks})"
            " ORDER BY rowid", positions).fetchall()

    def _log_positions(self, low: int, high: int, aggregate: UUID | None, limit: int,
                       newest_first: bool) -> list[int]:
        """Positions in [low, high] read from the log alone (no index filter)."""
        sql = "SELECT rowid FROM log.stored_events WHERE rowid BETWEEN ? AND ?"
        params: list[Any] = [low, high]
        if aggregate is not None:
            sql += " AND originator_id = ?"
            params.append(aggregate.hex)
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(f"{sql} ORDER BY rowid {order} LIMIT ?", [*params, limit])
        return sorted(int(row[0]) for row in rows)

    def _of_aggregate(self, aggregate: UUID, low: int, high: int) -> tuple[str, list[Any]]:
        """An event_index condition: the position is one of this aggregate's events."""
        return ("position IN (SELECT rowid FROM log.stored_events WHERE originator_id = ?)",
                [aggregate.hex])

    def _time_bounds(self, where: EventFilter) -> tuple[int, int]:
        """The positions of the time range (`at` follows log order): a binary search each."""
        low = position_at(self.db, where.since) if where.since is not None else 0
        high = position_at(self.db, where.until) - 1 if where.until is not None else 2**62
        return low, high

    def positions(self, where: EventFilter, after: int = 0, before: int | None = None,
                  limit: int = 100, newest_first: bool = False) -> list[int]:
        """The positions `select` reads, ascending."""
        bounds = self._time_bounds(where)
        low = max(after + 1, bounds[0])
        high = bounds[1] if before is None else min(before - 1, bounds[1])
        if low > high:
            return []
        if not where.types and where.user is None:
            return self._log_positions(low, high, where.aggregate, limit, newest_first)
        conditions = ["position BETWEEN ? AND ?"]
        params: list[Any] = [low, high]
        if where.types:
            codes = self._codes("SELECT id FROM event_types WHERE name IN ({})", where.types)
            if not codes:
                return []
            conditions.append(f"type IN ({','.join('?' * len(codes))})")
            params += codes
        if where.user is not None:
            codes = self._codes("SELECT id FROM event_users WHERE user_id IN ({})",
                                [str(where.user)])
            if not codes:
                return []
            conditions.append('"user" = ?')  # quoted: a reserved word in PostgreSQL
            params += codes
        if where.aggregate is not None:
            condition, values = self._of_aggregate(where.aggregate, low, high)
            conditions.append(condition)
            params += values
        order = "DESC" if newest_first else "ASC"
        sql = (f"SELECT position FROM event_index WHERE {' AND '.join(conditions)}"
               f" ORDER BY position {order} LIMIT ?")
        return sorted(int(row[0]) for row in self.db.execute(sql, [*params, limit]))

    def _codes(self, sql: str, values: list[str]) -> list[int]:
        """The event index's numbers for type names or user ids (none: nothing indexed)."""
        marks = ",".join("?" * len(values))
        return [int(row[0]) for row in self.db.execute(sql.format(marks), values)]


def user_by_name_or_id(db: sqlite3.Connection, mapper: Mapper[UUID], ref: str) -> UUID:
    """A user id from a UUID or a username, read from the log (`db`: the event store)."""
    def first(originator_id: UUID) -> Sequence[Any] | None:
        row: Sequence[Any] | None = db.execute(
            f"SELECT {COLUMNS} FROM stored_events WHERE originator_id = ?"
            " AND originator_version = 1", (originator_id.hex,)).fetchone()
        return row
    return resolve_user(first, mapper, ref)


def resolve_user(first: Callable[[UUID], Sequence[Any] | None], mapper: Mapper[UUID],
                 ref: str) -> UUID:
    """`user_by_name_or_id` for any store: `first(id)` reads an aggregate's first record."""
    try:
        user_id = UUID(ref)
    except ValueError:
        row = first(UsernameIndex.create_id(ref))
        if row is None:
            raise InvalidInput("user", Message(N_("no user is called %(name)s."),
                                               {"name": repr(ref)})) from None
        claimed: Any = decode(mapper, to_record(row)).event
        return UUID(str(claimed.user_id))
    row = first(user_id)
    if row is None or not str(row[3]).endswith(":User.Registered"):
        raise InvalidInput("user", Message(N_("no user has the id %(id)s."), {"id": ref}))
    return user_id
