"""Checking the hash chain: recompute it from the event store file, compare with the projection.

The chain projection (projections/hashchain.py) hashed every record when it was appended.
Recomputing the chain from the records now in the file and walking both in position order,
the first position where they part is the first altered one:

- the hashes differ: the record there was edited, or another record moved into its place;
- the chain has a position the log no longer has: the event was deleted (or moved away);
- the log has a position inside the chain that the chain never hashed: an event was
  inserted (or moved there).

Positions after the chain's head are not yet hashed (the server hashes them within a
moment); they are counted, not judged. A written-down head (`expect`) is checked against
the recomputed chain, which also catches a chain rebuilt from an already edited log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from app.audit.log import Record, head, records
from projections.hashchain import GENESIS, chain_hash, record_bytes

ProgressFn = Callable[[int], None]


@dataclass
class ChainReport:
    log_head: int  # the highest position in the log
    chain_head: int  # the highest position the projection has hashed
    head_hash: str  # the recomputed hash at chain_head (hex)
    checked: int  # positions compared
    unhashed: int  # log records after chain_head
    first_bad: int | None = None
    problem: str | None = None  # "altered", "deleted" or "inserted"
    expected: tuple[int, str] | None = None
    expected_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad is None and self.expected_ok is not False

    def describe(self) -> str:
        if self.first_bad is not None:
            what = {
                "altered": "its record was edited, or another record moved there",
                "deleted": "the chain hashed an event the log no longer has",
                "inserted": "the log has an event the chain never hashed",
            }[self.problem or "altered"]
            return f"hash chain BROKEN at position {self.first_bad}: {what}"
        if self.expected_ok is False and self.expected:
            return (f"hash chain does NOT match the written-down head: position"
                    f" {self.expected[0]} should hash to {self.expected[1]}")
        return (f"hash chain intact: {self.checked:,} events, head {self.chain_head}"
                f" {self.head_hash}"
                + (f" ({self.unhashed:,} newer events not hashed yet)" if self.unhashed else ""))


class ReadModelDB(Protocol):
    """A read-model connection of either store (sqlite3, or projections.database's)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def _chain_rows(db: ReadModelDB, batch: int = 5000) -> Iterator[tuple[int, bytes]]:
    after = 0
    while True:
        rows = db.execute("SELECT position, hash FROM hash_chain WHERE position > ?"
                          " ORDER BY position LIMIT ?", (after, batch)).fetchall()
        for position, digest in rows:
            yield int(position), bytes(digest)
        if len(rows) < batch:
            return
        after = rows[-1][0]


def _link(previous: bytes, record: Record) -> bytes:
    return chain_hash(previous, record_bytes(
        record.position, record.originator_id, record.originator_version, record.topic,
        record.state))


class LogRecords(Protocol):
    """A store's records as stored (the SQLite file is read with sqlite3 directly)."""

    def head(self) -> int: ...
    def records(self) -> Iterator[Record]: ...


def verify_chain(log_db: sqlite3.Connection | LogRecords, read_db: ReadModelDB,
                 expect: tuple[int, str] | None = None,
                 progress: ProgressFn | None = None) -> ChainReport:
    """Walk the log and the chain together; stop at the first difference."""
    head_row = read_db.execute("SELECT MAX(position) FROM hash_chain").fetchone()
    chain_head = int(head_row[0] or 0)
    if isinstance(log_db, sqlite3.Connection):
        log_head, log_records = head(log_db), records(log_db)
    else:
        log_head, log_records = log_db.head(), log_db.records()
    report = ChainReport(log_head, chain_head, GENESIS.hex(), 0, 0, expected=expect)
    chain = _chain_rows(read_db)
    link = next(chain, None)
    previous = GENESIS
    expected_hash: str | None = None
    for record in log_records:
        if link is not None and link[0] < record.position:
            report.first_bad, report.problem = link[0], "deleted"
            break
        if link is None or link[0] > record.position:
            if record.position <= chain_head:
                report.first_bad, report.problem = record.position, "inserted"
                break
            report.unhashed += 1  # newer than the chain: hash on, for an expected head
            previous = _link(previous, record)
        else:
            previous = _link(previous, record)
            if previous != link[1]:
                report.first_bad, report.problem = record.position, "altered"
                break
            report.checked += 1
            report.head_hash = previous.hex()
            link = next(chain, None)
        if expect is not None and record.position == expect[0]:
            expected_hash = previous.hex()
        if progress is not None and record.position % 1000 == 0:
            progress(record.position)
    else:
        if link is not None:  # the chain goes on where the log has ended
            report.first_bad, report.problem = link[0], "deleted"
    if expect is not None and report.first_bad is None:
        report.expected_ok = expected_hash == expect[1].lower()
    return report
