"""The event index keeps time in log order, so a time range is a range of positions."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.application import ChatApplication
from projections.event_index import EventIndexProjection, position_at

BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_time_stays_in_log_order_when_two_clocks_disagree(tmp_path: Path) -> None:
    chat = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(tmp_path / "events.sqlite")})
    owner = chat.register_user("clock_han", "han@example.com", "hash").id
    session_id, _ = chat.start_session(owner, "시계가 다른 두 프로세스", {})
    for n in range(4):
        chat.update_session(session_id, owner, f"제목 {n}", {})
    notifications = chat.recorder.select_notifications(0, 100)
    events = [chat.mapper.to_domain_event(n) for n in notifications]
    # As if a second process (the command line) stamped the 5th event 3 s behind the rest.
    offsets = [0, 1, 2, 3, 5, 2, 6, 7, 8][:len(events)]
    for event, seconds in zip(events, offsets, strict=True):
        object.__setattr__(event, "timestamp", BASE + timedelta(seconds=seconds))

    db = sqlite3.connect(tmp_path / "index.sqlite")
    projection = EventIndexProjection()
    projection.create(db)
    projection.apply_batch(db, list(zip(notifications, events, strict=True)))
    stamps = [row[0] for row in db.execute("SELECT at FROM event_index ORDER BY position")]
    assert stamps == sorted(stamps)
    assert stamps[5] == stamps[4]  # the late-stamped event keeps its predecessor's time

    positions = [n.id for n in notifications]
    assert position_at(db, BASE) == positions[0]
    assert position_at(db, BASE + timedelta(seconds=4)) == positions[4]
    assert position_at(db, BASE + timedelta(seconds=5)) == positions[4]
    assert position_at(db, BASE + timedelta(seconds=5, microseconds=1)) == positions[6]
    assert position_at(db, BASE + timedelta(hours=1)) == positions[-1] + 1
    assert position_at(db, BASE - timedelta(hours=1)) == positions[0]

    users = dict(db.execute("SELECT i.position, u.user_id FROM event_index i"
                            " JOIN event_users u ON u.id = i.user"))
    assert {users[p] for p in positions} == {str(owner)}  # the chat's events are its owner's
    db.close()
    chat.close()
