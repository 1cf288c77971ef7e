"""A rebuild runs beside the live read models (issue 7, item 7): between its passes the
live log is applied, so writers are not held for the rebuild's whole duration, and the
swapped-in result equals a replay from position 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import uuid4

from domain.application import ChatApplication
from projections.runner import BATCH_SIZE, ProjectionRunner


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM sessions ORDER BY id").fetchall()


def test_a_rebuild_lets_the_live_log_through(tmp_path: Path) -> None:
    chat = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(tmp_path / "events.sqlite"),
                                "SQLITE_LOCK_TIMEOUT": "10"})
    owner = uuid4()
    for i in range(2 * BATCH_SIZE + 50):
        chat.start_session(owner, f"대화 {i}", {})
    live = tmp_path / "readmodels.sqlite"
    runner = ProjectionRunner(chat, live)
    runner.catch_up()

    runner.rebuild_chunk = 1  # one batch per pass, as if the log were long
    runner.request_rebuild("sessions")
    runner.catch_up()
    assert runner.rebuild_progress == {"sessions": BATCH_SIZE}  # still rebuilding...
    _id, position = chat.start_session(owner, "재구축 중에 쓴 대화", {})
    runner.catch_up()
    assert runner.positions()["sessions"] >= position  # ...yet the new write is applied
    assert any("재구축 중에 쓴 대화" in map(str, row) for row in rows(live))
    while runner.rebuild_progress:
        runner.catch_up()
    assert not (tmp_path / "readmodels.sqlite.rebuild").exists()

    replayed = tmp_path / "replayed.sqlite"
    fresh = ProjectionRunner(chat, replayed)
    fresh.catch_up()
    assert rows(live) == rows(replayed) and len(rows(live)) == 2 * BATCH_SIZE + 51
    runner.stop()
    fresh.stop()
    chat.close()
