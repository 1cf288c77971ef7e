"""The event store's rows read without the library, and decoded faster than its mapper.

Replaying the log is mostly reading and decoding it: the library's `select_notifications`
and `Mapper.to_domain_event` cost about 16 µs an event, six times reading the same rows
with sqlite3 and parsing their JSON with orjson. This module is that faster path, and an
optional one: it applies only where it knows the store (the library's SQLite recorder on a
file) and the mapper (its `JSONTranscoder`, no cipher, no compressor), and `open_source`
gives the library's own path everywhere else (an in-memory store, a future PostgreSQL
one, a store without orjson).

`FastDecoder` makes exactly the event the mapper makes (tests/test_fast_decode.py compares
them field by field): the same custom types decoded by the same transcodings (every dict
of two keys `_type_` and `_data_`, innermost first), the same originator id conversion,
the same upcasting (`class_version`, `upcast_vX_vY`) and the same object construction.
Where it cannot vouch for a record (JSON that orjson reads differently from `json`, such
as integers wider than 64 bits, NaN or lone surrogates; an unknown type name; an upcast
that raises), it hands that record to the mapper, whose answer or error is the one given.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

try:
    import orjson
except ImportError:  # optional: without it the library decodes everything
    orjson = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Event = DomainEventProtocol[Any]
# orjson reads an integer beyond 64 bits as a float (json: an exact int); any float this
# large may be one, so the mapper decodes such a record.
WIDE = 9.2e18
UUID_CACHE = 100_000  # ids kept decoded (a chat's or a reply's id recurs in its events)


class StoredRecord(Protocol):
    """One stored event as the log holds it: a library `Notification` or a `StoredRow`."""

    @property
    def id(self) -> int: ...
    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


class StoredRow(NamedTuple):
    """A row of the SQLite recorder's events table, as stored (the id as hex text)."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


# StoredRow from a row tuple without NamedTuple._make's Python-level checks.
_as_row: Callable[[Any], StoredRow] = partial(tuple.__new__, StoredRow)


class _Unvouched(Exception):
    """The fast path cannot promise the mapper's answer for this record."""


class FastDecoder:
    """`Mapper.to_domain_event`, with orjson and without per-record overheads."""

    def __init__(self, mapper: Mapper[Any], originator_id_type: str = "uuid") -> None:
        if not self.supports(mapper):
            raise ValueError("this mapper's records are not plain JSON: use the mapper")
        self._mapper = mapper
        transcoder: Any = mapper.transcoder
        names: dict[str, Any] = dict(transcoder.names)
        self._types: dict[Any, Callable[[Any], Any]] = {
            name: transcoding.decode for name, transcoding in names.items()}
        if type(names.get("uuid_hex")) is UUIDAsHex:
            self._types["uuid_hex"] = self._uuid
        if type(names.get("datetime_iso")) is DatetimeAsISO:
            self._types["datetime_iso"] = _datetime
        self._uuids: dict[str, UUID] = {}
        self._ids_as_uuids = originator_id_type == "uuid"
        # event class -> (type of the ids it was found for, the library's id convertor)
        self._convertors: dict[type, tuple[type, Callable[[Any], Any]]] = {}

    @staticmethod
    def supports(mapper: Mapper[Any]) -> bool:
        return (orjson is not None and type(mapper.transcoder) is JSONTranscoder
                and mapper.cipher is None and mapper.compressor is None)

    def decode(self, record: StoredRecord) -> Event:
        try:
            state = self._walk(orjson.loads(record.state))
            cls = resolve_topic(record.topic)
            stored = record.originator_id
            originator_id: UUID | str | None = (
                self._uuids.get(stored) if self._ids_as_uuids and type(stored) is str else None)
            if originator_id is None:
                originator_id = self._originator_id(stored)
            found = self._convertors.get(cls)
            if found is None or found[0] is not type(originator_id):
                found = self._convertors[cls] = (type(originator_id), find_id_convertor(
                    cls, cast(Hashable, type(originator_id))))
            state["originator_id"] = found[1](originator_id)
            state["originator_version"] = record.originator_version
            class_version = getattr(cls, "class_version", 1)
            from_version = state.pop("class_version", 1)
            while from_version < class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
                from_version += 1
            event = object.__new__(cls)
            object.__setattr__(event, "__dict__", state)
            return event
        except Exception:  # the mapper decides: its event, or its error
            return self._mapper.to_domain_event(StoredEvent(
                originator_id=self._originator_id(record.originator_id),
                originator_version=record.originator_version, topic=record.topic,
                state=record.state))

    def _walk(self, value: dict[str, Any]) -> Any:
        """What `JSONTranscoder`'s object hook makes of a parsed dict (innermost first)."""
        if type(value) is not dict:
            raise _Unvouched
        types = self._types
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                # Most nested dicts are a custom type of plain data (a time, an id): decoded
                # here without a call to look inside them first.
                if len(item) == 2 and type(data := item.get("_data_")) is str:
                    decode = types.get(item.get("_type_"))
                    if decode is None:
                        raise _Unvouched
                    value[key] = decode(data)
                else:
                    value[key] = self._walk(item)
            elif kind is list:
                self._walk_list(item)
            elif kind is float and not -WIDE < item < WIDE:
                raise _Unvouched
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            decode = types.get(value["_type_"])
            if decode is None:
                raise _Unvouched  # the mapper raises its own error for an unknown name
            return decode(value["_data_"])
        return value

    def _walk_list(self, items: list[Any]) -> None:
        for i, item in enumerate(items):
            kind = type(item)
            if kind is dict:
                items[i] = self._walk(item)
            elif kind is list:
                self._walk_list(item)
            elif kind is float and not -WIDE < item < WIDE:
                raise _Unvouched

    def _uuid(self, data: Any) -> UUID:
        if type(data) is not str:
            raise _Unvouched  # UUIDAsHex asserts a str
        found = self._uuids.get(data)
        if found is None:
            if len(self._uuids) >= UUID_CACHE:
                self._uuids.clear()
            found = self._uuids[data] = UUID(data)
        return found

    def _originator_id(self, stored: UUID | str) -> UUID | str:
        """The id as the recorder converts it (`convert_originator_id`)."""
        if self._ids_as_uuids and type(stored) is str:
            return self._uuid(stored)
        return stored


def _datetime(data: Any) -> datetime:
    if type(data) is not str:
        raise _Unvouched  # DatetimeAsISO asserts a str
    return datetime.fromisoformat(data)


# -- reading the log -----------------------------------------------------------------------

Batch = tuple[Sequence[StoredRecord], list[Event]]


class LogSource(Protocol):
    """Records after a position, in log order, with their decoded events."""

    def read(self, after: int, limit: int) -> Batch: ...
    def close(self) -> None: ...


class LibrarySource:
    """The library's own path: any recorder, any mapper."""

    def __init__(self, application: Application[Any]) -> None:
        self._recorder = application.recorder
        self._mapper = application.mapper

    def read(self, after: int, limit: int) -> Batch:
        records = self._recorder.select_notifications(after, limit, inclusive_of_start=False)
        to_event = self._mapper.to_domain_event
        return records, [to_event(record) for record in records]

    def close(self) -> None:
        pass


class SQLiteRows:
    """The SQLite recorder's events table read with a read-only connection of its own
    (rowid is the log position, as `select_notifications` has it), decoded by
    `FastDecoder`. A read the connection cannot make goes through the library."""

    def __init__(self, path: Path, table: str, decoder: FastDecoder,
                 fallback: LibrarySource) -> None:
        self._path = path
        self._sql = (f"SELECT rowid, originator_id, originator_version, topic, state"
                     f" FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?")
        self.decoder = decoder
        self._fallback = fallback
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True,
                                       isolation_level=None, check_same_thread=False)
        return self._db

    def rows(self, after: int, limit: int) -> list[StoredRow]:
        return list(map(_as_row, self._connect().execute(self._sql, (after, limit))))

    def read(self, after: int, limit: int) -> Batch:
        try:
            records = self.rows(after, limit)
        except sqlite3.Error as error:  # e.g. the file not readable yet: the library reads
            log.warning("reading the log directly failed (%s); reading it via the library",
                        error)
            self.close()
            return self._fallback.read(after, limit)
        decode = self.decoder.decode
        return records, [decode(record) for record in records]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def sqlite_file(application: Application[Any]) -> tuple[Path, str, str] | None:
    """(file, events table, originator id type) of a SQLite recorder on a file; None for
    any other store (in memory, another database)."""
    try:
        from eventsourcing.sqlite import SQLiteAggregateRecorder
    except ImportError:
        return None
    recorder = application.recorder
    if not isinstance(recorder, SQLiteAggregateRecorder):
        return None
    datastore: Any = recorder.datastore
    pool: Any = getattr(datastore, "pool", None)
    name = getattr(pool, "db_name", None)
    if (not isinstance(name, str) or not name or getattr(pool, "is_sqlite_memory_mode", True)
            or name.startswith("file:")):
        return None
    return (Path(name), recorder.events_table_name,
            getattr(datastore, "originator_id_type", "uuid"))


def open_source(application: Application[Any]) -> LogSource:
    """The fast path where the store and mapper allow it, else the library's."""
    library = LibrarySource(application)
    found = sqlite_file(application)
    if found is None or not FastDecoder.supports(application.mapper):
        return library
    path, table, id_type = found
    return SQLiteRows(path, table, FastDecoder(application.mapper, id_type), library)
