"""Where the read models live, and one connection API over SQLite and PostgreSQL.

The read models are a SQLite file by default (`SQLiteReadModels`) or, beside a PostgreSQL
event store, tables in the schema `read_models` of the same database
(`PostgresReadModels`). Projections and readers write one SQL for both: SQLite's `?`
placeholders, portable statements, and a branch on `dialect_of(db)` where no portable form
exists. On PostgreSQL the connections below translate the placeholders and return rows that
read like `sqlite3.Row` (by index, by column name, `keys()`), so the code above them does
not change.

Which store the settings name is decided in the app (`app.event_store.read_models_for`):
projections know nothing of the app's configuration.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from aiosqlite.context import contextmanager

from projections.read_connection import BufferedCursor, ReadConnection, connect_read

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

Dialect = Literal["sqlite", "postgresql"]

SCHEMA = "read_models"
READ_POOL_MAX = 8  # request handlers' concurrent read-model queries per worker
CONNECT_TIMEOUT = 5.0


def dialect_of(db: object) -> Dialect:
    """The SQL dialect of a connection: ours carry it; a plain sqlite3/aiosqlite one is SQLite."""
    dialect: Dialect = getattr(db, "dialect", "sqlite")
    return dialect


class ReadDB(Protocol):
    """The async read connection request handlers share (`services.read_db`)."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Any: ...

    async def execute_fetchall(self, sql: str,
                               parameters: Iterable[Any] | None = None) -> list[Any]: ...

    async def close(self) -> None: ...


class ReadModels(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    def connect(self) -> Any:
        """A sync connection, sqlite3-like, in autocommit mode (explicit BEGIN/COMMIT)."""
        ...

    async def connect_read(self) -> ReadDB: ...

    def describe(self) -> str:
        """Where they are, for logs and cache keys (never a password)."""
        ...


# -- SQLite ------------------------------------------------------------------------------


class SQLiteDB(sqlite3.Connection):
    dialect: ClassVar[Dialect] = "sqlite"


@dataclass(frozen=True)
class SQLiteReadModels:
    path: Path
    dialect: ClassVar[Dialect] = "sqlite"

    def connect(self) -> SQLiteDB:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             factory=SQLiteDB)
        db.execute("PRAGMA journal_mode=WAL")
        # Read models can always be rebuilt from the log, so they need not wait for the disk.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def connect_read(self) -> ReadConnection:
        return await connect_read(self.path)

    def describe(self) -> str:
        return str(self.path)


# -- PostgreSQL --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresReadModels:
    url: str
    schema: str = SCHEMA
    dialect: ClassVar[Dialect] = "postgresql"

    def connect(self) -> PostgresDB:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT),
                               row_factory=_rows_by_name)
        _configure(conn)
        db = PostgresDB(conn)
        _create_schema(db, self.schema)
        db.execute(f'SET search_path TO "{self.schema}", public')
        return db

    async def connect_read(self) -> PostgresReadConnection:
        from psycopg_pool import AsyncConnectionPool

        schema = self.schema

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            _configure(conn)
            await conn.execute(f'SET search_path TO "{schema}", public')

        # Autocommit: every query reads the latest committed state (read-your-writes after
        # `settle`). Checked: a connection that died while idle is replaced, not used.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.url, min_size=1, max_size=READ_POOL_MAX, open=False,
            kwargs={"autocommit": True, "row_factory": _rows_by_name},
            configure=configure, timeout=CONNECT_TIMEOUT,
            check=AsyncConnectionPool.check_connection)
        await pool.open(wait=True)
        return PostgresReadConnection(pool)

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")) + \
            f"#{self.schema}"


def _create_schema(db: PostgresDB, schema: str) -> None:
    import psycopg

    # Another worker may create it at the same moment.
    with contextlib.suppress(psycopg.errors.UniqueViolation):
        db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


class Row(tuple[Any, ...]):
    """A row as `sqlite3.Row` reads: `row[0]`, `row["name"]`, `row.keys()`, unpacking.

    Each query's column names make a subclass (cached), so a row costs a plain tuple."""

    names: ClassVar[tuple[str, ...]] = ()
    by_name: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self.by_name[key.lower()])
            except KeyError:
                raise IndexError(f"No item with that key: {key!r}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


@lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    # Like sqlite3.Row, names match case-insensitively (PostgreSQL folds unquoted aliases).
    by_name = {name.lower(): i for i, name in reversed(list(enumerate(names)))}
    return type("Row", (Row,), {"names": names, "by_name": by_name})


def _rows_by_name(cursor: Any) -> Any:
    description = cursor.description
    if description is None:
        return tuple
    cls = _row_class(tuple(column.name for column in description))
    return cls


_BEGIN = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\b", re.IGNORECASE)


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """SQLite's SQL to psycopg's: `?` outside quotes becomes `%s`, `%` is escaped, and
    SQLite's `BEGIN IMMEDIATE` (a write lock up front) is a plain BEGIN."""
    sql = _BEGIN.sub("BEGIN", sql)
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "-" and sql.startswith("--", i):  # a comment, to the end of its line
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
            continue
        elif ch == "?":
            out.append("%s")
            i += 1
            continue
        out.append("%%" if ch == "%" else ch)
        i += 1
    return "".join(out)


def _param(value: Any) -> Any:
    if isinstance(value, str):
        # PostgreSQL's TEXT cannot hold NUL; read models are views, the log keeps the text.
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, bool):  # sqlite3 stores True as 1; booleans are BIGINT 0/1 here
        return int(value)
    return value


def _params(parameters: Iterable[Any] | None) -> list[Any]:
    return [_param(v) for v in parameters] if parameters is not None else []


def _configure(conn: Any) -> None:
    """Results as sqlite3 gives them: numeric (SUM of integers, AVG) as int or float."""
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return float(text) if any(c in text for c in ".eEN") else int(text)

    conn.adapters.register_loader("numeric", NumberLoader)


class PostgresDB:
    """A psycopg connection with sqlite3.Connection's calls, in autocommit mode: the
    callers' explicit BEGIN/COMMIT make the transactions, as on SQLite with
    `isolation_level=None`."""

    dialect: ClassVar[Dialect] = "postgresql"
    # Accepted for sqlite3 compatibility; rows always read by index and by name.
    row_factory: Any = None

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Iterable[Any] | None = None
                ) -> psycopg.Cursor[Any]:
        return self.raw.execute(translate(sql), _params(parameters))

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql), [_params(row) for row in seq])
        return cursor

    def executescript(self, script: str) -> None:
        """Several statements, no parameters (psycopg sends them as one simple query)."""
        self.raw.execute(script.encode())

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute(b"COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.raw.execute(b"ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> PostgresDB:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        # As sqlite3's `with connection:`: commit or roll back, keep the connection open.
        if kind is None:
            self.commit()
        else:
            self.rollback()


class PostgresReadConnection:
    """The request handlers' read connection on PostgreSQL: a small pool, each query run
    and fetched whole on one connection (as `ReadConnection` does on SQLite)."""

    dialect: ClassVar[Dialect] = "postgresql"
    row_factory: Any = None

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def _query(self, sql: str, parameters: Iterable[Any] | None
                     ) -> tuple[list[Any], Any]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(translate(sql), _params(parameters))
            rows = await cursor.fetchall() if cursor.description is not None else []
            return list(rows), cursor.description

    @contextmanager
    async def execute(self, sql: str, parameters: Iterable[Any] | None = None
                      ) -> BufferedCursor:
        rows, description = await self._query(sql, parameters)
        return BufferedCursor(rows, description)

    async def execute_fetchall(self, sql: str,
                               parameters: Iterable[Any] | None = None) -> list[Any]:
        rows, _description = await self._query(sql, parameters)
        return rows

    async def close(self) -> None:
        await self._pool.close()
