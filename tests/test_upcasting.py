"""Events that change shape: stored events of today's classes load after a field is added.

The log is append-only, so an event class that gains a field meets old records without it.
The library's answer is upcasting: the class says which version it is (`class_version`),
and a static method `upcast_v1_v2(state)` (then `upcast_v2_v3`, ...) rewrites an old
record's state dict while it is read, before the event object exists. The stored bytes never
change, so the hash chain stays intact.

The test stores real events with today's `User` through the real application and SQLite
file, then swaps in the next version of the class, as a deploy of changed code would: the
stored topics (`domain.users:User...`) resolve to the new classes. README ("Changing an
event's shape") has the rule this shows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import clear_topic_cache, register_topic

from app.audit.chain import verify_chain
from domain.application import ChatApplication
from projections.runner import ProjectionRunner


class User(Aggregate):
    """domain.users.User as the next version would write it: Registered gains `locale`."""

    class Registered(Aggregate.Created):
        class_version = 2
        username: str
        email: str
        password_hash: str
        is_admin: bool
        locale: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Accounts registered before the field existed: the users were all Korean.
            state["locale"] = "ko-KR"

    @event(Registered)
    def __init__(self, username: str, email: str, password_hash: str, is_admin: bool,
                 locale: str) -> None:
        self.username = username
        self.email = email
        self.password_hash = password_hash
        self.is_admin = is_admin
        self.locale = locale
        self.display_name = ""
        self.active_tokens: set[str] = set()

    @event("LoggedIn")
    def log_in(self, token_hash: str, address: str) -> None:
        self.active_tokens.add(token_hash)

    @event("ProfileUpdated")
    def _update_profile(self, changes: dict[str, str]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)


class UserWithoutUpcast(Aggregate):
    """The same change made wrongly: the version is raised but no upcast method written."""

    class Registered(Aggregate.Created):
        class_version = 2
        username: str
        email: str
        password_hash: str
        is_admin: bool
        locale: str

    @event(Registered)
    def __init__(self, username: str, email: str, password_hash: str, is_admin: bool,
                 locale: str) -> None:
        self.locale = locale


def deploy(aggregate: type[Aggregate]) -> None:
    """Make the stored topics of domain.users.User resolve to `aggregate` and its events."""
    clear_topic_cache()
    register_topic("domain.users:User", aggregate)
    for name in ("Registered", "LoggedIn", "ProfileUpdated"):
        if hasattr(aggregate, name):
            register_topic(f"domain.users:User.{name}", getattr(aggregate, name))


@pytest.fixture
def next_version() -> Iterator[None]:
    yield
    clear_topic_cache()  # topics resolve to today's classes again, by import


def open_app(path: Path) -> ChatApplication:
    return ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(path)})


def stored_state(path: Path, originator: UUID, version: int = 1) -> dict[str, Any]:
    db = sqlite3.connect(path)
    row = db.execute("SELECT state FROM stored_events WHERE originator_id = ?"
                     " AND originator_version = ?", (originator.hex, version)).fetchone()
    db.close()
    return dict(json.loads(row[0]))


def test_events_stored_today_load_after_a_field_is_added(
        tmp_path: Path, next_version: None) -> None:
    path = tmp_path / "events.sqlite"
    today = open_app(path)
    kim = today.register_user("kim_minji", "minji@example.com", "hash-of-a-password").id
    today.update_profile(kim, None, "김민지")
    today.log_in(kim, "token-hash-1", "127.0.0.1")
    today.close()
    assert "class_version" not in stored_state(path, kim)  # today's records are version 1
    assert "locale" not in stored_state(path, kim)

    deploy(User)
    upgraded = open_app(path)
    loaded = upgraded.repository.get(kim)
    assert isinstance(loaded, User)
    assert loaded.locale == "ko-KR"  # filled in by upcast_v1_v2 while reading
    assert (loaded.username, loaded.display_name) == ("kim_minji", "김민지")
    assert loaded.active_tokens == {"token-hash-1"} and loaded.version == 3

    # New records are written as version 2 and read back without upcasting.
    lee = User(username="lee_jun", email="jun@example.com", password_hash="h",
               is_admin=False, locale="en-GB")
    upgraded.save(lee)
    assert stored_state(path, lee.id)["class_version"] == 2
    again = open_app(path)
    assert again.repository.get(lee.id).locale == "en-GB"
    assert again.repository.get(kim).locale == "ko-KR"

    # The projections read the mixed log; the stored bytes, and so the chain, never changed.
    read = tmp_path / "read.sqlite"
    runner = ProjectionRunner(again, read)
    runner.catch_up()
    runner.stop()
    db = sqlite3.connect(read)
    names = sorted(row[0] for row in db.execute("SELECT username FROM users"))
    log = sqlite3.connect(path)
    report = verify_chain(log, db)
    db.close()
    log.close()
    assert names == ["kim_minji", "lee_jun"]
    assert report.ok and report.checked == again.head()


def test_a_version_raised_without_its_upcast_cannot_read_old_events(
        tmp_path: Path, next_version: None) -> None:
    path = tmp_path / "events.sqlite"
    today = open_app(path)
    park = today.register_user("park_seoyeon", "seoyeon@example.com", "hash").id
    today.close()
    deploy(UserWithoutUpcast)
    upgraded = open_app(path)
    with pytest.raises(AttributeError, match="upcast_v1_v2"):
        upgraded.repository.get(park)
