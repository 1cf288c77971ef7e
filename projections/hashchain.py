"""Tamper evidence: a hash chain over the event log, kept as a projection.

For each position p, in log order (the previous position is the one before p in the log;
positions may skip numbers):

    hash(p) = sha256(hash(previous position) || record(p)),  hash(before the first) = 32 zero bytes

where record(p) is the event exactly as the event store holds it, each field length-prefixed
so that no two different records encode alike:

    b"%d:%s %d:%s %d:%s %d:%s %d:" % (len(P), P, len(I), I, len(V), V, len(T), T,
                                      len(state)) + state

with P and V the position and version in decimal ASCII, I the originator id as stored (32
hex digits), T the topic in UTF-8 and state the stored bytes.

This projection hashes the *stored record*, not the decoded event: a decoded event hides
edits that decode alike (whitespace in the JSON, a field the class ignores), and it may
change shape by upcasting while the bytes stay the same. So it is a `BatchProjection`: the
runner hands it the records it read from the store (the rows of `stored_events`: rowid,
originator_id, originator_version, topic, state; read directly or through the library's
`select_notifications`) rather than only the decoded events. It reads no other table and
nothing but the log, so it is an ordinary projection: a rebuild from position 0 writes the
same rows.

Once a position is hashed, the runner never reads it again, so an edit made later to the
SQLite file no longer matches the chain: `verify` (app/audit/chain.py) recomputes the chain
from the file and names the first position where they part. A rebuild of this projection
from an edited log would hash the edited records: the head hash, written down elsewhere
(the dashboard shows it), is what still tells.
"""

from __future__ import annotations

import sqlite3
from hashlib import sha256
from typing import Any
from uuid import UUID

import aiosqlite

from projections.batch import Batch, BatchProjection
from projections.database import ReadDB
from projections.stored_rows import StoredRow

GENESIS = bytes(32)


def record_bytes(
    position: int, originator_id: UUID | str, originator_version: int, topic: str,
    state: bytes | str,
) -> bytes:
    """The canonical encoding of one stored record (see the module docstring)."""
    # The store writes UUIDs as 32 hex digits; a raw read gives that text back unchanged.
    oid = (originator_id.hex if isinstance(originator_id, UUID) else originator_id).encode()
    body = state.encode() if isinstance(state, str) else bytes(state)
    pos, version, name = b"%d" % position, b"%d" % originator_version, topic.encode()
    return b"%d:%s %d:%s %d:%s %d:%s %d:" % (
        len(pos), pos, len(oid), oid, len(version), version, len(name), name, len(body)
    ) + body


def chain_hash(previous: bytes, record: bytes) -> bytes:
    return sha256(previous + record).digest()


class HashChainProjection(BatchProjection):
    name = "hashchain"
    tables = ("hash_chain",)
    schema = """
    CREATE TABLE IF NOT EXISTS hash_chain (
        position INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );
    """
    postgres_schema = """
    CREATE TABLE IF NOT EXISTS hash_chain (
        position BIGINT PRIMARY KEY,
        hash BYTEA NOT NULL
    );
    """

    def apply(self, db: sqlite3.Connection, event: Any, position: int) -> None:
        raise TypeError(f"{self.name} is applied by batches: use apply_batch")

    def apply_batch(self, db: sqlite3.Connection, batch: Batch) -> None:
        """Extend the chain by the batch's records (in log order, after the chain's head).

        `record_bytes` inlined: this loop runs once per event of a rebuild. A record the
        runner read directly has its id as the stored hex text already."""
        _, previous = head(db)
        rows = []
        # The "len:value " parts of an id and of a topic, made once per batch, not per event.
        oids: dict[Any, bytes] = {}
        topics: dict[str, bytes] = {}
        for record, _event in batch:
            rid, oid, version, topic, body = (
                record if type(record) is StoredRow else (
                    record.id, record.originator_id, record.originator_version,
                    record.topic, record.state))
            oid_part = oids.get(oid)
            if oid_part is None:
                oid_bytes = (oid if type(oid) is str else _hex(oid)).encode()
                oid_part = oids[oid] = b"%d:%s " % (len(oid_bytes), oid_bytes)
            topic_part = topics.get(topic)
            if topic_part is None:
                name = topic.encode()
                topic_part = topics[topic] = b"%d:%s " % (len(name), name)
            if type(body) is not bytes:
                body = body.encode() if isinstance(body, str) else bytes(body)
            pos, ver = b"%d" % rid, b"%d" % version
            previous = sha256(b"%s%d:%s %s%d:%s %s%d:%s" % (
                previous, len(pos), pos, oid_part, len(ver), ver, topic_part, len(body),
                body)).digest()
            rows.append((rid, previous))
        db.executemany("INSERT INTO hash_chain (position, hash) VALUES (?, ?)", rows)


def _hex(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def head(db: sqlite3.Connection) -> tuple[int, bytes]:
    """(position, hash) of the chain's last link; (0, GENESIS) when it is empty."""
    row = db.execute(
        "SELECT position, hash FROM hash_chain ORDER BY position DESC LIMIT 1").fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, GENESIS)


async def head_hash(db: aiosqlite.Connection | ReadDB) -> tuple[int, str]:
    """(position, hex hash) of the chain's head, for the dashboard (an async db)."""
    async with db.execute(
        "SELECT position, hash FROM hash_chain ORDER BY position DESC LIMIT 1"
    ) as cursor:
        row = await cursor.fetchone()
    return (int(row[0]), bytes(row[1]).hex()) if row else (0, GENESIS.hex())
