"""Projections applied a batch at a time, seeing each event's stored record too.

The runner hands a `BatchProjection` every batch it reads (in log order, only events after
the projection's position) as (record, event) pairs: the record exactly as the event store
holds it and the decoded event. Writing a batch with one `executemany` instead of one
statement per event is what keeps a rebuild of a million-event log fast, and the record is
what the hash chain must hash (the bytes, not what they decode to).

A record is a library `Notification` or, on the runner's direct read of a SQLite store, a
`StoredRow` (projections/stored_rows.py): the same fields, the originator id as a UUID or
as the 32 hex digits stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from eventsourcing.domain import DomainEventProtocol

from projections.base import Projection
from projections.stored_rows import StoredRecord

Batch = Sequence[tuple[StoredRecord, DomainEventProtocol[Any]]]


class BatchProjection(Projection):
    def apply_batch(self, db: sqlite3.Connection, batch: Batch) -> None:
        """By default, one event at a time through the `on_*` handlers."""
        for record, event in batch:
            self.apply(db, event, record.id)
