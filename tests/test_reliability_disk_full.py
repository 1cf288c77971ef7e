"""A full disk in the middle of a reply (issue 7, item 9): the actor keeps trying to end
the reply as failed until the store takes the record, so it is not left `streaming` until
a restart; and the user's record says nothing of the internal error."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from app.inference import actor as actor_module
from app.inference.actor import InferenceActor, Job, Tuning


class FullDiskChat:
    """A fake command side: a disk full cannot be produced for real inside a test. Its
    first `full_for` writes fail as SQLite's do on a full disk, then it records."""

    def __init__(self, full_for: int) -> None:
        self.full_for = full_for
        self.recorded: list[tuple[str, str, str]] = []

    def change_reply(self, _session_id: Any, change: Callable[[Any], None]) -> int:
        if self.full_for:
            self.full_for -= 1
            raise sqlite3.OperationalError("database or disk is full")
        recorded = self.recorded

        class Session:
            def fail_reply(self, reply_id: Any, code: str, reason: str) -> None:
                recorded.append((str(reply_id), code, reason))

        change(Session())
        return 1


def test_a_failure_is_recorded_once_the_disk_has_room(monkeypatch: Any) -> None:
    monkeypatch.setattr(actor_module, "FAIL_RECORD_FIRST_SECONDS", 0.001)
    chat = FullDiskChat(full_for=3)
    actor = InferenceActor(chat, lambda *_: None, Tuning(  # type: ignore[arg-type]
        max_queue=4, timeout=60, flush_interval=0.05, flush_count=8))
    job = Job(uuid4(), uuid4(), 1)
    actor._fail_after_crash(job, OSError("/srv/비밀/models/model.gguf: disk full"))
    assert len(chat.recorded) == 1
    reply_id, code, reason = chat.recorded[0]
    assert reply_id == str(job.reply_id) and code == "internal_error"
    assert "/srv" not in reason and "disk full" not in reason
