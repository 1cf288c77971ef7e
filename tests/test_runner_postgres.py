"""The projection runner on PostgreSQL read models: rows and positions in one transaction,
rebuilds swapped in whole, and one runner applying the log across several workers (an
advisory lock; the others follow the committed positions and take over when it dies)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

import projections.runner as runner_module
from app.config import Settings
from app.event_store import event_store_env
from domain.application import ChatApplication
from projections.base import Projection
from projections.database import PostgresReadModels
from projections.leader import lock_key
from projections.runner import ProjectionRunner, all_projections
from tests.postgres import PostgresCluster
from tests.server import Api
from tests.test_domain import CONFIG
from tests.test_projections import dump as dump_sqlite
from tests.test_projections import populate

TABLES = [table for projection in all_projections() for table in projection.tables]
NAMES = {projection.name for projection in all_projections()}
SETTLE = 30.0  # an upper bound for a handover, never reached when it works

Dump = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def url(postgres: PostgresCluster) -> str:
    return postgres.create_database("runner")


@pytest.fixture
def chat(url: str) -> Iterator[ChatApplication]:
    app = ChatApplication(env=event_store_env(Settings(event_store=url)))
    yield app
    app.close()


def dump(url: str, schema: str = "read_models", tables: list[str] = TABLES) -> Dump:
    """Every row of every projection table (and the positions), sorted."""
    db = PostgresReadModels(url, schema).connect()
    try:
        found = {t: sorted((tuple(r) for r in db.execute(f"SELECT * FROM {t}").fetchall()),
                           key=repr) for t in tables}
        found["projection_positions"] = sorted(
            tuple(r) for r in db.execute("SELECT name, position FROM projection_positions")
            if r[0] in NAMES)
        return found
    finally:
        db.close()


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        return [tuple(row) for row in db.execute(sql, args or None).fetchall()]


class Heard:
    """What a runner's listener was told, waitable."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self._changed = threading.Condition()

    def __call__(self, position: int) -> None:
        with self._changed:
            self.positions.append(position)
            self._changed.notify_all()

    def wait_for(self, position: int) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: bool(self.positions) and self.positions[-1] >= position, SETTLE)


class Counted(Projection):
    """Records each session start once (a second insert of one position would fail) and
    counts, per runner, the starts this runner applied itself."""

    name = "counted"
    tables = ("counted",)
    schema = "CREATE TABLE IF NOT EXISTS counted (position BIGINT PRIMARY KEY, title TEXT);"

    def __init__(self) -> None:
        self.applied = 0

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        db.execute("INSERT INTO counted VALUES (?, ?)", (position, e.title))
        self.applied += 1


def runner(chat: ChatApplication, url: str, *extra: Projection) -> ProjectionRunner:
    return ProjectionRunner(chat, PostgresReadModels(url), [*all_projections(), *extra])


def test_the_runner_applies_the_log_into_postgresql_tables(
    chat: ChatApplication, url: str, tmp_path: Path
) -> None:
    h = populate(chat)
    live = ProjectionRunner(chat, PostgresReadModels(url))
    try:
        assert live.is_leader is False  # not before its first catch-up
        assert live.catch_up() == chat.head()
        assert live.is_leader
        assert live.positions() == {name: chat.head() for name in live.names}
    finally:
        live.stop()
    in_schema = {t for (t,) in query(url, "SELECT table_name FROM information_schema.tables"
                                          " WHERE table_schema = 'read_models'")}
    assert {*TABLES, "projection_positions", "projection_versions"} <= in_schema
    assert query(url, "SELECT title, message_count FROM read_models.sessions WHERE id = %s",
                 str(h.ids["chat"])) == [("안녕하세요, 오늘 날씨 어때요?", 8)]
    assert query(url, "SELECT content, status FROM read_models.messages WHERE id = %s",
                 str(h.ids["r1"])) == [("맑아요!", "complete")]

    # The same rows as the runner writes into SQLite from the same log (the search
    # projection's text table has another shape there: FTS5).
    path = tmp_path / "read.sqlite"
    on_sqlite = ProjectionRunner(chat, path)
    on_sqlite.catch_up()
    on_sqlite.stop()
    same = [t for t in TABLES if t != "search_text"]
    expected = dump_sqlite(path)
    assert dump(url, tables=same) == {t: expected[t] for t in [*same, "projection_positions"]}


class Exploding(Projection):
    """Fails on a session start titled "💥", after writing a row of its own: in Python, or
    in PostgreSQL (the same row twice), which in pipeline mode surfaces only later."""

    name = "exploding"
    tables = ("exploding",)
    schema = "CREATE TABLE IF NOT EXISTS exploding (position BIGINT PRIMARY KEY);"
    armed: ClassVar[bool] = True
    how: ClassVar[str] = "python"

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        db.execute("INSERT INTO exploding VALUES (?)", (position,))
        if self.armed and e.title == "💥":
            if self.how == "sql":
                db.execute("INSERT INTO exploding VALUES (?)", (position,))
            else:
                raise RuntimeError("crash in the middle of a batch")


@pytest.mark.parametrize("how", ["python", "sql"])
def test_a_crash_inside_a_batch_applies_nothing_of_it(
    chat: ChatApplication, url: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Exploding, "how", how)
    populate(chat)
    live = runner(chat, url, Exploding())
    tables = [*TABLES, "exploding"]
    try:
        applied = live.catch_up()
        before = dump(url, tables=tables)
        user = chat.register_user("폭발", "boom@example.com", "hash")
        chat.start_session(user.id, "먼저", CONFIG)  # in the batch, before the failure
        chat.start_session(user.id, "💥", CONFIG)
        failure = psycopg.errors.UniqueViolation if how == "sql" else RuntimeError
        with pytest.raises(failure):
            live.catch_up()
        assert dump(url, tables=tables) == before
        assert set(live.positions().values()) == {applied}
        Exploding.armed = False  # the fault is fixed: the retry applies the batch once
        assert live.catch_up() == chat.head()
    finally:
        Exploding.armed = True
        live.stop()
    assert query(url, "SELECT COUNT(*) FROM read_models.exploding")[0][0] == 4 + 2
    assert query(url, "SELECT COUNT(*) FROM read_models.users")[0][0] == 3


def test_a_rebuild_on_postgresql_writes_identical_rows(
    chat: ChatApplication, url: str, postgres: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    populate(chat)
    live = ProjectionRunner(chat, PostgresReadModels(url))
    try:
        live.catch_up()
        before = dump(url)
        assert before["messages"] and before["sessions"] and before["search_text"]
        for name in live.names:
            live.request_rebuild(name)
            assert live.catch_up() == chat.head()
            assert dump(url) == before, f"rebuilding {name} changed the read model"
        # Online, in passes of one small batch, with the live log growing between them.
        monkeypatch.setattr(runner_module, "BATCH_SIZE", 7)
        live.rebuild_chunk = 1
        for name in live.names:
            live.request_rebuild(name)
        live.catch_up()
        assert live.rebuild_progress  # still rebuilding...
        user = chat.register_user("재건", "rebuild@example.com", "hash")
        chat.start_session(user.id, "재건 중", CONFIG)
        live.catch_up()
        assert set(live.positions().values()) == {chat.head()}  # ...yet the write is applied
        while live.rebuild_progress:
            live.catch_up()
    finally:
        live.stop()
    # The same rows as a replay from position 0.
    assert dump(url) == dump_reference(chat, postgres)
    # No copy is left behind.
    assert query(url, "SELECT nspname::text FROM pg_namespace WHERE nspname::text LIKE"
                      " 'read_models%' ORDER BY 1") == [("read_models",)]


class Probe(Projection):
    """Counts the live `sessions` rows from another connection while a rebuild replays."""

    name = "probe"
    tables = ("probe",)
    schema = "CREATE TABLE IF NOT EXISTS probe (position BIGINT, visible BIGINT);"
    url: ClassVar[str]

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        visible = query(self.url, "SELECT COUNT(*) FROM read_models.sessions")[0][0]
        db.execute("INSERT INTO probe VALUES (?, ?)", (position, visible))


def test_readers_never_see_a_half_rebuilt_read_model_on_postgresql(
    chat: ChatApplication, url: str
) -> None:
    populate(chat)
    Probe.url = url
    live = runner(chat, url, Probe())
    try:
        live.catch_up()
        live.request_rebuild("sessions")
        live.request_rebuild("probe")
        live.catch_up()
    finally:
        live.stop()
    # While the sessions table was being rebuilt, other connections still saw all of it.
    assert query(url, "SELECT visible FROM read_models.probe") == [(4,)] * 4


def test_two_runners_on_one_database_apply_the_log_once(
    chat: ChatApplication, url: str, postgres: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No polling: only notifications wake the runners (the event store's the leader, the
    # leader's the follower, a stopping leader's the follower to take over).
    monkeypatch.setattr(runner_module, "POLL_SECONDS", 3600.0)
    user = chat.register_user("둘", "two@example.com", "hash")
    chat.start_session(user.id, "첫 대화", CONFIG)
    first_counted, second_counted = Counted(), Counted()
    first = runner(chat, url, first_counted)
    second = runner(chat, url, second_counted)
    heard = Heard()
    second.add_listener(heard)
    try:
        assert first.catch_up() == chat.head()
        assert second.catch_up() == chat.head()  # it follows: reads what the first applied
        assert (first.is_leader, second.is_leader) == (True, False)
        assert heard.positions == [chat.head()]
        first.start()
        second.start()
        for title in ("두 번째", "세 번째"):
            chat.start_session(user.id, title, CONFIG)
        # Woken by the event store's NOTIFY, the leader applies; woken by the leader's, the
        # follower's listeners and waiters hear of it.
        assert heard.wait_for(chat.head())
        assert second.wait_for(chat.head(), SETTLE)
        assert (first_counted.applied, second_counted.applied) == (3, 0)
        assert (first.is_leader, second.is_leader) == (True, False)

        # The leader stops (and says so): the other takes over and applies.
        first.stop()
        chat.start_session(user.id, "인계 후", CONFIG)
        assert heard.wait_for(chat.head())
        assert second.is_leader
        assert (first_counted.applied, second_counted.applied) == (3, 1)
    finally:
        first.stop()
        second.stop()
    assert [title for (title,) in query(url, "SELECT title FROM read_models.counted"
                                              " ORDER BY position")] == [
        "첫 대화", "두 번째", "세 번째", "인계 후"]
    assert dump(url) == dump_reference(chat, postgres)


def dump_reference(chat: ChatApplication, postgres: PostgresCluster) -> Dump:
    """The rows a single runner writes from position 0 (into a database of its own)."""
    elsewhere = postgres.create_database("reference")
    reference = ProjectionRunner(chat, PostgresReadModels(elsewhere))
    reference.catch_up()
    reference.stop()
    return dump(elsewhere)


def lock_holders(url: str) -> list[int]:
    """Backends holding an advisory lock (only the leader's session does)."""
    return [pid for (pid,) in query(
        url, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
             " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")]


def test_a_killed_leader_session_hands_over_to_the_follower(
    chat: ChatApplication, url: str, postgres: PostgresCluster
) -> None:
    user = chat.register_user("셋", "three@example.com", "hash")
    chat.start_session(user.id, "처음", CONFIG)
    first_counted, second_counted = Counted(), Counted()
    first = runner(chat, url, first_counted)  # driven by hand: it never retries on its own
    second = runner(chat, url, second_counted)
    try:
        first.catch_up()
        [holder] = lock_holders(url)
        second.start()
        assert second.catch_up() == chat.head() and not second.is_leader
        # The leader's worker dies as far as PostgreSQL can tell: its lock session ends.
        query(url, "SELECT pg_terminate_backend(%s)", holder)
        chat.start_session(user.id, "그 다음", CONFIG)
        assert second.wait_for(chat.head(), SETTLE)  # only a new leader can get there
        assert second.is_leader and lock_holders(url) != [holder]
        # The old leader finds its lock gone and follows, applying nothing.
        assert first.catch_up() == chat.head()
        assert not first.is_leader
        assert (first_counted.applied, second_counted.applied) == (1, 1)
    finally:
        first.stop()
        second.stop()
    assert dump(url) == dump_reference(chat, postgres)


class Usurp(Projection):
    """While its runner applies a session start titled "가로채기", that runner's lock
    session is cut, and another runner takes the lead and catches up (it waits for the
    batch's uncommitted positions, then finds them moved)."""

    name = "usurp"
    tables = ("usurp",)
    schema = "CREATE TABLE IF NOT EXISTS usurp (position BIGINT);"
    url: ClassVar[str]
    holder: ClassVar[int]
    other: ClassVar[ProjectionRunner]
    outcome: ClassVar[list[Any]]
    thread: ClassVar[threading.Thread]

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        if e.title != "가로채기":
            return
        query(self.url, "SELECT pg_terminate_backend(%s)", Usurp.holder)

        def catch_up() -> None:
            try:
                Usurp.outcome.append(Usurp.other.catch_up())
            except Exception as error:
                Usurp.outcome.append(error)

        Usurp.thread = threading.Thread(target=catch_up)
        Usurp.thread.start()
        # Until the other runner waits on this batch's row locks (or has finished).
        deadline = time.monotonic() + SETTLE
        with psycopg.connect(self.url, autocommit=True) as watch:
            while Usurp.thread.is_alive() and time.monotonic() < deadline and not watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()").fetchone():
                watch.execute("SELECT pg_sleep(0.01)")


def test_a_leader_that_lost_its_lock_mid_batch_never_applies_twice(
    chat: ChatApplication, url: str
) -> None:
    user = chat.register_user("넷", "four@example.com", "hash")
    chat.start_session(user.id, "전", CONFIG)
    first_counted, second_counted = Counted(), Counted()
    first = runner(chat, url, first_counted, Usurp())
    second = runner(chat, url, second_counted, Usurp())
    try:
        first.catch_up()
        [Usurp.holder] = lock_holders(url)
        Usurp.url, Usurp.other, Usurp.outcome = url, second, []
        chat.start_session(user.id, "가로채기", CONFIG)
        # The old leader checked its lock before the batch, so it commits the batch...
        assert first.catch_up() == chat.head()
        Usurp.thread.join(SETTLE)
        # ...and the new leader, which read the positions before that commit, applied none
        # of it: it found the positions moved and followed.
        assert Usurp.outcome == [chat.head()]
        assert second.is_leader and (first_counted.applied, second_counted.applied) == (2, 0)
        chat.start_session(user.id, "후", CONFIG)
        assert second.catch_up() == chat.head()
        assert first.catch_up() == chat.head() and not first.is_leader
        assert (first_counted.applied, second_counted.applied) == (2, 1)
    finally:
        first.stop()
        second.stop()


def test_sqlite_read_models_still_take_a_path(chat: ChatApplication, tmp_path: Path) -> None:
    """A Path means the SQLite file there, as before (on a PostgreSQL event store here)."""
    populate(chat)
    path = tmp_path / "read.sqlite"
    live = ProjectionRunner(chat, path)
    try:
        assert live.is_leader and live.path == path
        assert live.catch_up() == chat.head()
    finally:
        live.stop()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 4


class Numbered(Projection):
    """Rows PostgreSQL numbers itself (an identity column) and a computed column: a rebuild
    copies the numbers as they are and leaves the computed column to PostgreSQL."""

    name = "numbered"
    tables = ("numbered",)
    schema = ("CREATE TABLE IF NOT EXISTS numbered ("
              " n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title TEXT NOT NULL,"
              " shout TEXT GENERATED ALWAYS AS (upper(title)) STORED);")

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        db.execute("INSERT INTO numbered (title) VALUES (?)", (e.title,))


def test_a_rebuild_copies_identity_columns_and_recomputes_generated_ones(
    chat: ChatApplication, url: str
) -> None:
    user = chat.register_user("번호", "numbers@example.com", "hash")
    for title in ("하나", "two"):
        chat.start_session(user.id, title, CONFIG)
    live = runner(chat, url, Numbered())
    try:
        live.catch_up()
        before = query(url, "SELECT * FROM read_models.numbered ORDER BY n")
        assert before == [(1, "하나", "하나"), (2, "two", "TWO")]
        live.request_rebuild("numbered")
        live.catch_up()
        assert query(url, "SELECT * FROM read_models.numbered ORDER BY n") == before
        chat.start_session(user.id, "three", CONFIG)  # numbered after the copied rows
        live.catch_up()
    finally:
        live.stop()
    assert query(url, "SELECT n, shout FROM read_models.numbered ORDER BY n")[-1] == (3, "THREE")


class WhereApplied(Projection):
    """Records the schema each session start was applied in (a rebuild's copy or the live
    one): after a swap, the live table holds the copy's rows."""

    name = "where_applied"
    tables = ("where_applied",)
    schema = "CREATE TABLE IF NOT EXISTS where_applied (position BIGINT, applied_in TEXT);"

    def on_ChatSession_Started(self, db: Any, e: Any, position: int) -> None:
        db.execute("INSERT INTO where_applied VALUES (?, current_schema())", (position,))


def wait_until_applied(url: str, done: Any) -> bool:
    """Check `done()` after each NOTIFY of the runners' commits (and every 0.2 s)."""
    deadline = time.monotonic() + SETTLE
    with psycopg.connect(url, autocommit=True) as listen:
        listen.execute("LISTEN read_models_applied")
        while not done():
            if time.monotonic() > deadline:
                return False
            for _note in listen.notifies(timeout=0.2, stop_after=1):
                pass
    return True


def test_a_follower_asks_the_leader_for_a_rebuild(chat: ChatApplication, url: str) -> None:
    populate(chat)
    leader = runner(chat, url, WhereApplied())
    follower = runner(chat, url, WhereApplied())
    try:
        leader.catch_up()
        follower.catch_up()
        assert {s for (s,) in query(url, "SELECT applied_in FROM read_models.where_applied")
                } == {"read_models"}
        leader.start()
        follower.start()
        follower.request_rebuild("where_applied")
        assert follower.rebuild_progress == {}  # it does not rebuild itself...

        def rebuilt() -> bool:
            found = {s for (s,) in query(url, "SELECT applied_in FROM"
                                              " read_models.where_applied")}
            return len(found) == 1 and found.pop().startswith("read_models_rebuild_")

        assert wait_until_applied(url, rebuilt)  # ...the leader does
        assert follower.positions() == {name: chat.head() for name in follower.names}
    finally:
        leader.stop()
        follower.stop()


def test_the_runner_leads_again_after_postgresql_restarts() -> None:
    """PostgreSQL itself goes away (its own cluster, stopped at once) and comes back: every
    connection of the runner died, the lock with them; it reconnects, takes the lead
    again and applies what was written since."""
    cluster = PostgresCluster().start()
    try:
        url = cluster.create_database()
        chat = ChatApplication(env=event_store_env(Settings(event_store=url)))
        live = ProjectionRunner(chat, PostgresReadModels(url))
        heard = Heard()
        live.add_listener(heard)
        try:
            chat.register_user("전", "before@example.com", "hash")
            live.catch_up()
            live.start()
            cluster.pause()
            cluster.resume()
            user = chat.register_user("후", "after@example.com", "hash")
            chat.start_session(user.id, "재시작 뒤", CONFIG)
            assert heard.wait_for(chat.head())
            assert live.is_leader
        finally:
            live.stop()
            chat.close()
        assert query(url, "SELECT title FROM read_models.sessions") == [("재시작 뒤",)]
    finally:
        cluster.stop()


def test_followers_know_when_the_leader_fails_and_recovers(
    chat: ChatApplication, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers on every worker stop waiting for read models the leader cannot update (fast
    503s), and wait again once it applies."""
    monkeypatch.setattr(runner_module, "RETRY_MAX_SECONDS", 1.0)
    user = chat.register_user("실패", "fails@example.com", "hash")
    leader = runner(chat, url, Exploding())
    follower = runner(chat, url, Exploding())
    try:
        leader.catch_up()
        follower.catch_up()
        leader.start()
        follower.start()
        chat.start_session(user.id, "💥", CONFIG)
        assert not follower.wait_for(chat.head(), SETTLE)  # it returns once told...
        assert follower.failing and not follower.is_leader  # ...that the leader fails
        heard = Heard()
        follower.add_listener(heard)
        Exploding.armed = False
        assert heard.wait_for(chat.head())  # the leader's retry applies it
        assert not follower.failing
        assert follower.wait_for(chat.head(), SETTLE)
    finally:
        Exploding.armed = True
        leader.stop()
        follower.stop()


def projection_leaders(url: str) -> list[int]:
    """Backends holding the projections' advisory lock (PostgreSQL splits a bigint key into
    classid, the high half, and objid, the low half)."""
    key = lock_key(f"{runner_module.LOCK_NAME}:read_models") & 0xFFFF_FFFF_FFFF_FFFF
    return [pid for (pid,) in query(
        url, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
             " AND classid = %s AND objid = %s AND objsubid = 1", key >> 32, key & 0xFFFF_FFFF)]


def test_killing_the_worker_that_projects_hands_over_to_the_other(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Two uvicorn workers on one database: the first started leads the projections; killed
    (kill -9), its lock's session ends and the other worker takes over within seconds, so
    what is written through it shows in the read models both share."""
    from tests.test_two_workers import start_pair, stop_pair

    url = postgres.create_database()
    first, second = pair = start_pair(tmp_path, url)
    try:
        [holder] = projection_leaders(url)
        api = Api(second.url).register("heir_worker")  # the follower waits for the leader's apply
        assert api.post("/api/sessions/", json={"title": "죽기 전"}).status_code == 201
        first.kill()
        deadline = time.monotonic() + SETTLE
        while projection_leaders(url) in ([], [holder]):
            assert time.monotonic() < deadline, "no worker took the projections over"
            time.sleep(0.05)
        created = api.post("/api/sessions/", json={"title": "죽은 뒤"})
        assert created.status_code == 201, created.text
        titles = [s["title"] for s in api.get("/api/sessions/").json()]
        assert {"죽기 전", "죽은 뒤"} <= set(titles)
    finally:
        stop_pair(pair)


class Plain(Projection):
    name = "indexed"
    tables = ("indexed",)
    schema = "CREATE TABLE IF NOT EXISTS indexed (position BIGINT, title TEXT);"


class Indexed(Plain):
    """The same projection, same version, whose schema gained an index."""

    schema = Plain.schema + "CREATE INDEX IF NOT EXISTS indexed_by_title ON indexed (title);"


def test_what_a_schema_gained_is_created_by_the_next_leader(
    chat: ChatApplication, url: str
) -> None:
    old = runner(chat, url, Plain())
    old.catch_up()
    new = runner(chat, url, Indexed())  # joins while the old one leads: no DDL yet
    indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'indexed'"
    try:
        assert new.catch_up() == chat.head() and not new.is_leader
        assert query(url, indexes) == []
        old.stop()
        new.catch_up()
        assert new.is_leader
        assert query(url, indexes) == [("indexed_by_title",)]
    finally:
        old.stop()
        new.stop()
