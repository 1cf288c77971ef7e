"""The users, hash chain, event index and search read models on PostgreSQL: the same events
give the same rows, and every read function the same answer as on SQLite.

One log (a SQLite event store) is projected into both stores by the projections
themselves, then each read function of `projections/users.py`, `hashchain.py`,
`event_index.py` and `search.py` (and `app.usecases.search`, which builds the snippets) is
asked the same questions on both. Korean, emoji and NUL throughout; search words of one,
two, and three or more characters. The one allowed difference is the contract's: a NUL in
a text reads back as U+FFFD on PostgreSQL.

Keyword search is FTS5 on SQLite and pg_trgm on PostgreSQL; projections/trigram.py makes
the second match and rank as the first. Its two pieces (FTS5's case folding and bm25) are
checked against SQLite itself here too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import psycopg
import pytest

from app.usecases.search import search_messages
from domain.application import ChatApplication
from projections import hashchain, search, trigram, users
from projections.base import Projection, iso
from projections.batch import BatchProjection
from projections.database import PostgresReadModels, ReadModels, SQLiteReadModels
from projections.event_index import EventIndexProjection, position_at
from projections.hashchain import HashChainProjection
from projections.search import SearchProjection
from projections.stored_rows import LibrarySource
from projections.users import UsersProjection
from tests.postgres import PostgresCluster
from tests.test_domain import CONFIG
from tests.test_projections import finish, populate

UNKNOWN = "00000000-0000-0000-0000-000000000000"
TTL = timedelta(days=30)

# Words of 1 and 2 characters (LIKE, ASCII case only) and of 3 or more (the trigram
# index, FTS5's case folding, bm25 order), alone and mixed; %, _ and \ are literal.
QUERIES = [
    "날", "씨", "a", "A", "%", "_", "\\", "😀", "É", "é", "µ", "Σ",
    "날씨", "Ab", "50", "%완", "É!", "ÉC", "ab",
    "날씨가", "WEATHER", "weather", "Weather report", "éco", "ÉCOLE", "σίσυφος", "ΣΊΣΥΦΟΣ",
    "aaa", "aaaa", "hidden", "뒤쪽", "앞부분", "완료_중", "50%", "back\\slash", "😀😀😀",
    "😀 날씨가", "날씨가 좋아요", "날 씨가", "a aaa", "없는단어", '"quoted"', "µμ",
    "날씨가 맑고 따뜻합니다.", "씨가 a", "API", "가져온", "été", "ÉTÉ", "k", "K", "300k", "s",
    "ſ", "é 날씨가",
]


@pytest.fixture
def chat(store_env: dict[str, str]) -> Iterator[ChatApplication]:
    app = ChatApplication(env=store_env)
    yield app
    app.close()


def populate_b(chat: ChatApplication) -> dict[str, Any]:
    """Accounts through every change the users projection follows, and messages to search:
    Korean, emoji, NUL (FTS5 indexes a text only up to it), non-ASCII case, repeated words
    (bm25 order), equal texts (ties), another user's matches (bm25's whole-table counts),
    an API session, an import, an edit and a deleted session."""
    ids: dict[str, Any] = {}
    minsu = chat.register_user("민수", "minsu@example.com", "hash-민수")
    other = chat.register_user("Other", "other@example.com", "hash-other")
    ids.update(minsu=minsu.id, other=other.id)
    for token in ("tok-민수-1", "tok-민수-2", "tok-민수-3"):
        chat.log_in(minsu.id, token, "10.0.0.9")
    chat.log_out(minsu.id, "tok-민수-1")
    chat.change_password(minsu.id, "hash-2", keep_token="tok-민수-3")
    chat.log_in(minsu.id, "tok-민수-4", "10.0.0.9")
    chat.update_profile(minsu.id, "민수@example.org", "김민수 🌸\x00끝")
    chat.log_in(other.id, "tok-other-1", "10.0.0.8")
    chat.change_password(other.id, "hash-3", keep_token=None)
    chat.log_in(other.id, "tok-other-2", "10.0.0.8")
    chat.grant_admin(other.id)
    chat.revoke_admin(other.id)
    chat.disable_user(other.id)
    chat.enable_user(other.id)
    chat.log_in(other.id, "tok-other-3", "10.0.0.8")

    first, _ = chat.start_session(minsu.id, "검색 테스트 🔍", CONFIG)
    _, r1, _ = chat.post_message(first, minsu.id,
                                 "오늘 서울 날씨가 맑고 따뜻합니다. 날씨가 좋아요 😀", 1)
    finish(chat, first, r1, ["The WEATHER ", "is fine; weather report: ", "Weather!"])
    _, r2, _ = chat.post_message(first, minsu.id, "École ÉCOLE école — ΣΊΣΥΦΟΣ σίσυφος µ μ", 1)
    finish(chat, first, r2, ["부분 답변 50% 완료_중 ", "back\\slash"], ending="cancel")
    _, r3, _ = chat.post_message(first, minsu.id, "앞부분 검색됨\x00뒤쪽 날씨가 안 보임 hidden", 1)
    finish(chat, first, r3, ["aaaaaa aaa ", "중단됨 😀😀😀"], ending="interrupt")

    second, _ = chat.start_session(minsu.id, "둘째", CONFIG)
    for text in ("날씨가", "날씨가 날씨가 날씨가", "날씨가 날씨가", "날씨가", "a날씨가b",
                 "ÉTÉ 여름", "온도 300\u212a (켈빈) \u017f",
                 '"quoted" 날씨가 긴 문장입니다 아주 길게 늘여 쓴 문장 하나'):
        _, reply, _ = chat.post_message(second, minsu.id, text, 1)
        finish(chat, second, reply, ["네"])
    edited, reply, _ = chat.post_message(second, minsu.id, "고치기 전 ab", 1)
    finish(chat, second, reply, ["ab AB Ab"])
    _, reply, _ = chat.edit_message(second, minsu.id, edited, "고친 뒤 AB 날씨가", 1)
    finish(chat, second, reply, ["고친 답"])

    gone, _ = chat.start_session(minsu.id, "지울 대화", CONFIG)
    _, reply, _ = chat.post_message(gone, minsu.id, "지워질 날씨가 이야기", 1)
    finish(chat, gone, reply, ["사라질 답"])
    ids["before delete"] = chat.head()
    chat.delete_session(gone, minsu.id)
    ids["after delete"] = chat.head()

    api, _ = chat.start_session(minsu.id, "API", {**CONFIG, "origin": "api"})
    _, reply, _ = chat.post_message(api, minsu.id, "API 날씨가 질문", 1)
    finish(chat, api, reply, ["API 답"])

    chat.import_session(minsu.id, "가져온 대화 📥", CONFIG, [
        {"role": role, "content": content, "timestamp": "2026-01-02T03:04:05.000000Z",
         "status": "complete", "token_count": None, "processing_time": None, "metadata": {},
         "branch": {"parent": parent, "version_of": None, "on_branch": False}}
        for role, content, parent in (("user", "가져온 날씨가 기록", None),
                                      ("assistant", "가져온 답 WEATHER", 0))
    ], "localchat")

    elsewhere, _ = chat.start_session(other.id, "남의 대화", CONFIG)
    for text in ("날씨가 날씨가 남의 글", "weather WEATHER", "École aaa %_"):
        _, reply, _ = chat.post_message(elsewhere, other.id, text, 1)
        finish(chat, elsewhere, reply, ["날씨가"])
    return ids


def projections() -> list[Projection]:
    return [UsersProjection(), HashChainProjection(), EventIndexProjection(),
            SearchProjection()]


def build(models: ReadModels, chat: ChatApplication, batch_size: int,
          applied: list[Projection] | None = None, after: int = 0,
          until: int | None = None) -> None:
    """The projections' tables from the log (after `after`, up to `until`), each batch in
    one transaction as the runner writes them."""
    applied = projections() if applied is None else applied
    source = LibrarySource(chat)
    db = models.connect()
    try:
        for projection in applied:
            projection.create(db)
            projection.create(db)  # again: a restart finds the tables there
        position = after
        while until is None or position < until:
            records, events = source.read(position, batch_size)
            pairs = [(record, event) for record, event in zip(records, events, strict=True)
                     if until is None or record.id <= until]
            if not pairs:
                break
            db.execute("BEGIN")
            for projection in applied:
                if isinstance(projection, BatchProjection):
                    projection.apply_batch(db, pairs)
                else:
                    for record, event in pairs:
                        projection.apply(db, event, record.id)
            db.execute("COMMIT")
            position = pairs[-1][0].id
    finally:
        db.close()


def plain(value: Any) -> Any:
    """Rows as lists and dicts, dataclasses as dicts, bytes as bytes, a NUL as U+FFFD
    (what PostgreSQL's TEXT holds instead)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "keys"):
        return {k: plain(value[k]) for k in value.keys()}  # noqa: SIM118 (rows, not dicts)
    return value


TABLES = {
    "users": "id", "auth_tokens": "token_hash", "hash_chain": "position",
    "event_index": "position", "event_types": "id", "event_users": "id",
    "event_owners": "originator_id", "search_sessions": "id", "search_messages": "position",
}


async def answers(models: ReadModels, times: list[datetime]) -> dict[str, Any]:
    """Every read function's answer to every question worth asking of this log."""
    db = models.connect()
    read = await models.connect_read()
    found: dict[str, Any] = {}
    try:
        for table, key in TABLES.items():
            found[f"table {table}"] = [tuple(row) for row in db.execute(
                f"SELECT * FROM {table} ORDER BY {key}")]
        text_key = "position" if models.dialect == "postgresql" else "rowid"
        found["table search_text"] = [tuple(row) for row in db.execute(
            f"SELECT {text_key}, content FROM search_text ORDER BY {text_key}")]

        # users
        user_ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
        tokens = [row[0] for row in db.execute("SELECT token_hash FROM auth_tokens")]
        now = iso(datetime.now(UTC))
        later = iso(datetime.now(UTC) + TTL + timedelta(seconds=1))
        for token in [*tokens, "no-such-token"]:
            found[f"token {token}"] = await users.user_for_token(read, token, TTL, now)
            found[f"token {token} later"] = await users.user_for_token(read, token, TTL, later)
        for user_id in [*user_ids, UNKNOWN]:
            found[f"user {user_id}"] = await users.get_user(read, user_id)
        found["count users"] = await users.count_users(read)

        # hash chain
        found["head"] = hashchain.head(db)
        found["head hash"] = await hashchain.head_hash(read)

        # event index: every event's moment, a microsecond either side, before and after all
        for moment in [datetime(2000, 1, 1, tzinfo=UTC), datetime(2999, 1, 1),
                       *times, *(t - timedelta(microseconds=1) for t in times),
                       *(t + timedelta(microseconds=1) for t in times)]:
            found[f"position at {moment.isoformat()}"] = position_at(db, moment)

        # search, for each owner (and nobody)
        messages = [row[0] for row in db.execute("SELECT id FROM search_messages")]
        for owner in [*user_ids, UNKNOWN]:
            for q in QUERIES:
                for limit in (20, 2):
                    found[f"keyword {owner} {q!r} {limit}"] = await search.keyword_search(
                        read, owner, q, limit)
                found[f"search {owner} {q!r}"] = await search_messages(read, None, owner, q)
            found[f"visible {owner}"] = await search.visible_messages(
                read, owner, [*messages, UNKNOWN])
            found[f"visible {owner} none"] = await search.visible_messages(read, owner, [])
        return found
    finally:
        await read.close()
        db.close()


def test_postgres_read_models_answer_as_sqlite_does(
    chat: ChatApplication, postgres: PostgresCluster, tmp_path: Path
) -> None:
    populate(chat)
    ids = populate_b(chat)
    times = [cast(Any, event).timestamp for event in LibrarySource(chat).read(0, 10_000)[1]][::5]
    lite = SQLiteReadModels(tmp_path / "read.sqlite")
    pg = PostgresReadModels(postgres.create_database("read"))
    build(lite, chat, 500)
    build(pg, chat, 7)  # small batches: the event index's numbers span several
    on_sqlite = asyncio.run(answers(lite, times))
    on_postgres = asyncio.run(answers(pg, times))

    assert on_postgres.keys() == on_sqlite.keys()
    for key, expected in on_sqlite.items():
        assert plain(on_postgres[key]) == plain(expected), key

    # The answers are worth comparing: what each store found, checked on PostgreSQL.
    minsu, other = str(ids["minsu"]), str(ids["other"])

    def contents(q: str, limit: int = 20, owner: str = minsu) -> list[str]:
        return [f.content for f in on_postgres[f"keyword {owner} {q!r} {limit}"]]

    # bm25 as FTS5 computes it: the short texts first (two alike: the newer one first)
    assert contents("날씨가")[:3] == ["날씨가", "날씨가", "날씨가 날씨가"]
    assert len(contents("날씨가")) == 9  # not the API's, the deleted or after the NUL
    assert "가져온 날씨가 기록" in contents("날씨가")
    assert contents("날씨가", 2) == contents("날씨가")[:2]
    assert len(contents("날씨가", owner=other)) == 4  # only one's own
    assert contents("날씨") == contents("날")  # newest first
    assert sorted(contents("날")) == sorted(contents("날씨가"))
    assert contents("hidden") == [] and contents("뒤쪽") == []  # after the NUL
    assert contents("앞부분") == ["앞부분 검색됨\ufffd뒤쪽 날씨가 안 보임 hidden"]
    assert contents("WEATHER") == contents("weather") and len(contents("weather")) == 2
    assert contents("éco") == contents("ÉCOLE") == ["École ÉCOLE école — ΣΊΣΥΦΟΣ σίσυφος µ μ"]
    assert contents("σίσυφος") == contents("ΣΊΣΥΦΟΣ") != []  # FTS5 folds Greek too
    assert contents("été") == contents("ÉTÉ") == ["ÉTÉ 여름"]
    assert "ÉTÉ 여름" in contents("É") and "ÉTÉ 여름" not in contents("é")  # LIKE: ASCII only
    assert contents("É!") == [] and contents("ÉC") == contents("éco")
    assert contents("ab") == contents("Ab") != []  # ...but ASCII case, ignored
    kelvin = "온도 300\u212a (켈빈) \u017f"  # FTS5 folds the Kelvin sign to k, LIKE does not
    assert contents("300k") == [kelvin] and kelvin not in contents("k") + contents("s")
    assert contents("k") == contents("K") != [] and contents("ſ") == [kelvin]
    assert contents("é 날씨가") == []  # no text has both
    assert contents("%") == contents("50%") == ["부분 답변 50% 완료_중 back\\slash"]
    assert contents("_") == contents("완료_중") == contents("back\\slash") == contents("%")
    assert contents("aaaa") == ["aaaaaa aaa 중단됨 😀😀😀"]
    assert contents("😀😀😀") == contents("aaaa")
    assert contents("없는단어") == [] and contents("API") == []
    assert contents('"quoted"') == ['"quoted" 날씨가 긴 문장입니다 아주 길게 늘여 쓴 문장 하나']
    hits = on_postgres[f"search {minsu} '날씨가 좋아요'"]
    assert [hit.snippet for hit in hits] == [
        "오늘 서울 <mark>날씨가</mark> 맑고 따뜻합니다. <mark>날씨가</mark> <mark>좋아요</mark> 😀"]
    assert on_postgres[f"keyword {UNKNOWN} '날' 20"] == []
    assert len(on_postgres[f"visible {other}"]) == 6
    assert len(on_postgres[f"visible {minsu}"]) > len(contents("날"))
    assert on_postgres[f"visible {UNKNOWN}"] == {}
    assert on_postgres["token tok-민수-3 later"] is None
    assert {user["username"] for key, user in on_postgres.items()
            if key.startswith("token ") and not key.endswith("later") and user} == {
        "민수", "Other", "alice"}
    assert on_postgres[f"user {minsu}"]["display_name"] == "김민수 🌸\ufffd끝"
    assert on_postgres["head"][0] == chat.head()


def test_search_counts_follow_the_log(
    chat: ChatApplication, postgres: PostgresCluster, tmp_path: Path
) -> None:
    """bm25 needs the whole table's counts; PostgreSQL's searches keep them by read
    connection and add the new texts only. Asked by one connection while the log grows and
    a session is deleted, the answers stay SQLite's, checkpoint by checkpoint."""
    ids = populate_b(chat)
    stores: dict[str, ReadModels] = {
        "sqlite": SQLiteReadModels(tmp_path / "read.sqlite"),
        "postgresql": PostgresReadModels(postgres.create_database("counts"))}
    applied: dict[str, list[Projection]] = {name: [SearchProjection()] for name in stores}
    owners = [str(ids["minsu"]), str(ids["other"])]
    queries = ["날씨가", "weather", "날씨가 날씨가", "éco", "aaa", "ab 날씨가", "없는단어"]

    async def ask(read: Any) -> dict[str, Any]:
        return {f"{owner} {q}": await search.keyword_search(read, owner, q, 20)
                for owner in owners for q in queries}

    async def follow() -> list[dict[str, Any]]:
        reads = {name: await models.connect_read() for name, models in stores.items()}
        seen, after = [], 0
        try:
            for until in (ids["before delete"], ids["after delete"], chat.head()):
                for name, models in stores.items():
                    build(models, chat, 5, applied[name], after, until)
                after = until
                seen.append({name: await ask(read) for name, read in reads.items()})
                counts.append(search._totals[reads["postgresql"]])
                texts = [trigram.indexed(row[0]) for row in await reads["sqlite"].execute_fetchall(
                    "SELECT content FROM search_text")]  # what FTS5 counts, on SQLite
                expected.append((len(texts), sum(trigram.tokens(len(t)) for t in texts)))
            return seen
        finally:
            for read in reads.values():
                await read.close()

    counts: list[Any] = []
    expected: list[tuple[int, int]] = []
    seen = asyncio.run(follow())
    for checkpoint in seen:
        assert plain(checkpoint["postgresql"]) == plain(checkpoint["sqlite"])
    minsu = str(ids["minsu"])
    before, after_delete, end = (
        [f.content for f in step["postgresql"][f"{minsu} 날씨가"]] for step in seen)
    assert "지워질 날씨가 이야기" in before and "지워질 날씨가 이야기" not in after_delete
    assert "가져온 날씨가 기록" in end and "가져온 날씨가 기록" not in after_delete
    # bm25's counts, as FTS5 has them; the last checkpoint added texts to the counts the
    # second one made (no deletion since).
    assert [(c.rows, c.tokens) for c in counts] == expected
    assert counts[0].gone < counts[1].gone == counts[2].gone
    assert counts[1].top < counts[2].top and counts[1].rows < counts[2].rows


def test_trigram_index_needs_only_the_database_owner(postgres: PostgresCluster) -> None:
    """pg_trgm is a trusted extension: a database's owner who is no superuser creates it
    with the search tables, and Korean words are found through its index."""
    role = f"owner_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database("owned")
    name = urlsplit(url).path.lstrip("/")

    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
    models = PostgresReadModels(url.replace("postgres@", f"{role}@"))
    db: Any = models.connect()
    try:
        row = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                         ).fetchone()
        assert row is not None and row[0] is False
        SearchProjection().create(db)
        db.execute("INSERT INTO search_text (position, chars, id, session_id, role, content,"
                   " folded) SELECT g, 4, g::text, 's', 'user', g::text, '날씨가 ' || g"
                   " FROM generate_series(1, 200) g")
        db.execute("ANALYZE search_text")
        db.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in db.execute(
            "EXPLAIN SELECT position FROM search_text WHERE folded LIKE ?", ("%씨가 17%",)))
        assert "search_text_trigrams" in plan
        found = db.execute("SELECT position FROM search_text WHERE folded LIKE ?"
                           " ORDER BY position", ("%씨가 17%",)).fetchall()
        assert [row[0] for row in found] == [17, *range(170, 180)]
    finally:
        db.close()


def test_fold_is_fts5s_own() -> None:
    """`trigram.fold` against FTS5 itself, for every character up to U+1F000 (past the
    last cased script; U+FFFE and U+FFFF, which SQLite reads as U+FFFD, included)."""
    chars = [c for c in range(1, 0x1F000) if not 0xD800 <= c <= 0xDFFF]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(content, tokenize='trigram')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.execute("INSERT INTO t (rowid, content) VALUES (1, ?)",
               ("".join(map(chr, chars)) + "  ",))
    folded = {chars[offset]: term[0] for term, offset in db.execute("SELECT term, offset FROM v")
              if offset < len(chars)}
    assert len(folded) == len(chars)
    wrong = [hex(c) for c in chars if trigram.fold(chr(c)) != folded[c]]
    assert wrong == []
    assert trigram.fold("ÉCOLE Σ ς µ") == "école σ σ μ"  # not str.lower(): ς, µ
    assert trigram.ascii_fold("ÉCOLE Ab") == "École ab"


def test_bm25_is_fts5s_own() -> None:
    """FTS5's `rank` (bm25) and match set, recomputed by projections/trigram.py from the
    texts alone: the same rows, the same doubles, for random Korean, Greek and NUL texts."""
    rng = random.Random(11)
    alphabet = "aA 가날Σσςé\x00"
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(content, tokenize='trigram')")
    texts: dict[int, str] = {}
    for rowid in range(1, 300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        texts[rowid] = text
        db.execute("INSERT INTO t (rowid, content) VALUES (?, ?)", (rowid, text))
    for rowid in list(texts)[::7]:  # deletions keep FTS5's counts exact
        db.execute("DELETE FROM t WHERE rowid = ?", (rowid,))
        del texts[rowid]
    folded = {rowid: trigram.fold(trigram.indexed(text)) for rowid, text in texts.items()}
    total = sum(trigram.tokens(len(text)) for text in folded.values())
    compared = 0
    for _ in range(200):
        words = [w for w in ("".join(rng.choice(alphabet[:-1]) for _ in range(rng.randint(3, 5)))
                             for _ in range(rng.randint(1, 3))) if " " not in w]
        if not words:
            continue
        query = " AND ".join(f'"{w}"' for w in words)
        expected = db.execute("SELECT rowid, rank FROM t WHERE t MATCH ?"
                              " ORDER BY rank, rowid DESC", (query,)).fetchall()
        keys = [trigram.fold(w) for w in words]
        hits = [sum(key in text for text in folded.values()) for key in keys]
        mine = sorted(
            (trigram.bm25([trigram.occurrences(text, key) for key in keys],
                          trigram.tokens(len(text)), len(folded), total, hits), -rowid)
            for rowid, text in folded.items() if all(key in text for key in keys))
        assert [(-rowid, rank) for rank, rowid in mine] == expected, words
        compared += bool(expected)
    assert compared > 50
