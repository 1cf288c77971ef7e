"""projections/database.py: one connection API over SQLite and PostgreSQL read models.

The same statements, written once with SQLite's placeholders, run on both stores and read
back the same rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projections.database import (
    PostgresReadModels,
    ReadModels,
    SQLiteReadModels,
    dialect_of,
    translate,
)
from tests.postgres import PostgresCluster

SCHEMA = """
CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL, score DOUBLE PRECISION,
                    flag BIGINT NOT NULL DEFAULT 0);
CREATE INDEX notes_by_score ON notes (score);
"""


@pytest.fixture(params=["sqlite", "postgres"])
def read_models(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModels]:
    if request.param == "sqlite":
        yield SQLiteReadModels(tmp_path / "read_models.sqlite")
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        yield PostgresReadModels(cluster.create_database())


def test_translate_placeholders_outside_quotes_only() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE '%?%'") == \
        "SELECT * FROM t WHERE a = %s AND b LIKE '%%?%%'"
    assert translate('SELECT "odd?name" FROM t WHERE x = ?') == \
        'SELECT "odd?name" FROM t WHERE x = %s'
    assert translate("BEGIN IMMEDIATE") == "BEGIN"
    assert translate("SELECT 1 -- why? 100%\nFROM t WHERE a = ?") == \
        "SELECT 1 -- why? 100%%\nFROM t WHERE a = %s"


def _fill(db: Any) -> None:
    db.executescript(SCHEMA)
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO notes (id, body, score, flag) VALUES (?, ?, ?, ?)",
                   [(1, "안녕하세요 세계", 0.5, True), (2, "100% 확실 🎉", 2.0, False),
                    (3, "널\x00문자", None, 1)])
    db.execute("INSERT INTO notes (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE"
               " SET body = excluded.body", (2, "100% 확실 🎉 (고침)"))
    db.execute("COMMIT")


def test_same_statements_same_rows(read_models: ReadModels) -> None:
    db = read_models.connect()
    try:
        _fill(db)
        rows = db.execute("SELECT id, body, score, flag FROM notes ORDER BY id").fetchall()
        total = db.execute("SELECT SUM(id) AS total, AVG(id) AS mean, COUNT(*) AS n"
                           " FROM notes").fetchone()
    finally:
        db.close()
    nul = "\x00" if read_models.dialect == "sqlite" else "\ufffd"
    assert [tuple(row) for row in rows] == [
        (1, "안녕하세요 세계", 0.5, 1), (2, "100% 확실 🎉 (고침)", 2.0, 0),
        (3, f"널{nul}문자", None, 1)]
    assert tuple(total) == (6, 2.0, 3)
    assert type(total[0]) is int and type(total[1]) is float


def test_a_rolled_back_transaction_leaves_nothing(read_models: ReadModels) -> None:
    db = read_models.connect()
    try:
        _fill(db)
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM notes")
        db.execute("ROLLBACK")
        count = db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    finally:
        db.close()
    assert count == 3


def test_async_reads_by_name(read_models: ReadModels) -> None:
    db = read_models.connect()
    try:
        _fill(db)
    finally:
        db.close()

    async def read() -> tuple[Any, list[Any], str]:
        reader = await read_models.connect_read()
        try:
            async with reader.execute("SELECT id, body AS note_body FROM notes WHERE body"
                                      " LIKE ? ORDER BY id", ("%세계%",)) as cursor:
                first = await cursor.fetchone()
            rows = await reader.execute_fetchall(
                "SELECT id FROM notes WHERE score > ? ORDER BY id", (0.1,))
            return first, rows, dialect_of(reader)
        finally:
            await reader.close()

    first, rows, dialect = asyncio.run(read())
    assert (first["id"], first["note_body"], first[1]) == (1, "안녕하세요 세계", "안녕하세요 세계")
    assert list(first.keys()) == ["id", "note_body"]
    assert [row[0] for row in rows] == [1, 2]
    assert dialect == read_models.dialect


def test_describe_never_shows_a_password() -> None:
    where = PostgresReadModels("postgresql://chat:s3cret@db.example:5433/localchat").describe()
    assert "s3cret" not in where
    assert where == "postgresql://chat@db.example:5433/localchat#read_models"
