"""Two web workers (two uvicorn processes) on one PostgreSQL event store (issue 11 §2).

Each worker has its own DATA_DIR and the same SECRET_KEY. A reply posted to one streams
to a client of the other, is generated once (one claim, one set of tokens), resumes from a
`Last-Event-ID` on either worker, and a worker killed while generating leaves its reply to
the other, which marks it interrupted, keeping its text.

The read models are PostgreSQL tables both workers read, written by the projection leader
(projections/leader.py); `visible` waits (never for a fixed time) until the second worker
shows a write made through the first, which also holds were each worker to project the
log into read models of its own.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic
from playwright.sync_api import Browser, expect

from app.cluster.log_notify import LogNotifier
from app.cluster.worker_lock import WorkerLock
from app.config import Settings
from app.event_store import event_store_env
from domain.application import ChatApplication
from domain.errors import AlreadyClaimed
from domain.sessions import ChatSession
from tests.postgres import PostgresCluster
from tests.server import Api, ServerProcess, sse_events
from tests.test_browser import assert_same_as_fresh_load, letters
from tests.test_streaming import LONG_PROMPT, post, read_until_end

ENDINGS = ("done", "error", "cancelled")


def start_pair(base: Path, url: str) -> list[ServerProcess]:
    """Two workers on one database: separate DATA_DIRs, one SECRET_KEY, one reply at a
    time each (so a second reply has to go to the other worker). The first user registered
    on them is their admin, who reads the event list."""
    env = {"SECRET_KEY": secrets.token_hex(16), "N_PARALLEL": "1", "N_THREADS": "1"}
    pair = [ServerProcess(base / name, url, **env) for name in ("a", "b")]
    try:
        for worker in pair:  # one after the other: the first creates the tables
            worker.start()
    except BaseException:
        stop_pair(pair)
        raise
    return pair


def stop_pair(pair: list[ServerProcess]) -> None:
    for worker in pair:
        worker.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory,
            postgres: PostgresCluster) -> Iterator[list[ServerProcess]]:
    """A pair shared by the tests that leave both workers running, with its admin."""
    pair = start_pair(tmp_path_factory.mktemp("two-workers"), postgres.create_database())
    Api(pair[0].url).register("operator", password="correct horse")
    yield pair
    stop_pair(pair)


@pytest.fixture
def operator(workers: list[ServerProcess]) -> Api:
    """The shared pair's admin."""
    signed_in = Api(workers[0].url).post(
        "/api/auth/login/", json={"username": "operator", "password": "correct horse"})
    assert signed_in.status_code == 200, signed_in.text
    return Api(workers[0].url, signed_in.json()["token"])


@pytest.fixture
def own_workers(tmp_path: Path, postgres: PostgresCluster) -> Iterator[list[ServerProcess]]:
    """A pair for a test that kills one of them."""
    pair = start_pair(tmp_path, postgres.create_database())
    yield pair
    stop_pair(pair)


def visible(check: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until the other worker's read models show a write (they follow the log)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the other worker never saw the write"
        time.sleep(0.05)


def on(server: ServerProcess, api: Api) -> Api:
    """The same user, signed in with the same token, on another worker."""
    other = Api(server.url, api.token)
    other.user = api.user
    return other


class Listener(threading.Thread):
    """An SSE client of one session, connected before anything is posted, reading every
    event until a reply ends."""

    def __init__(self, api: Api, session_id: str) -> None:
        super().__init__(daemon=True)
        self.api, self.session_id = api, session_id
        self.connected = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.api.http.stream("GET", f"/api/sessions/{self.session_id}/stream/",
                                      headers={"Last-Event-ID": "0"},
                                      timeout=httpx.Timeout(60, read=60)) as response:
                assert response.status_code == 200, response.status_code
                self.connected.set()
                for event in sse_events(response):
                    self.events.append(event)
                    if event["event"] in ENDINGS:
                        return
        except BaseException as error:  # reported by the test's thread
            self.error = error
            self.connected.set()


def claims(admin: Api, session_id: str, reply_id: str) -> list[dict[str, Any]]:
    return [e for e in admin.events(type="ReplyClaimed", originator_id=session_id)
            if e["data"]["reply_id"] == reply_id]


def worker_of(claim: dict[str, Any], pair: list[ServerProcess]) -> ServerProcess:
    """The worker whose process made the claim (its name is host:pid)."""
    pid = int(str(claim["data"]["worker"]).rsplit(":", 1)[1])
    found = [w for w in pair if w.proc is not None and w.proc.pid == pid]
    assert len(found) == 1, (claim, [w.proc.pid for w in pair if w.proc])
    return found[0]


def test_a_worker_lock_is_free_only_once_its_worker_is_gone(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    mine, theirs = WorkerLock(url), WorkerLock(url)
    try:
        key = theirs.acquire()
        assert mine.acquire() != key
        assert not mine.is_dead(key) and not mine.is_dead(mine.key)
        assert mine.others_alive()
        pid = theirs.backend_pid
        # Their process dies: PostgreSQL ends the session (waiting here until it has).
        with psycopg.connect(url, autocommit=True) as db:
            assert db.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
        assert mine.is_dead(key)
        assert mine.is_dead(key), "probing a dead worker's lock lets it go again"
        assert not mine.others_alive()
        assert not mine.is_dead(mine.key)
    finally:
        mine.release()
        theirs.release()


def test_commits_of_another_process_are_announced_here(postgres: PostgresCluster) -> None:
    """What wakes streams, the runner and the actor on a worker for another's commits."""
    url = postgres.create_database()
    env = event_store_env(Settings(event_store=url))
    here, there = ChatApplication(env=env), ChatApplication(env=env)
    announced: list[tuple[int, set[Any]]] = []
    heard: list[tuple[int, str]] = []
    done = threading.Event()

    def changed(head: int, ids: set[Any]) -> None:
        announced.append((head, ids))

    def events(batch: list[tuple[int, Any]]) -> None:
        heard.extend((position, type(event).__name__) for position, event in batch)
        done.set()

    here.add_change_listener(changed)
    topics = [get_topic(getattr(ChatSession, "ReplyQueued"))]  # noqa: B009 (made by @event)
    notifier = LogNotifier(url, here, topics, events)
    try:
        notifier.start()
        owner = uuid4()
        session_id, started = there.start_session(owner, "저쪽", {})
        _message, _reply, queued = there.post_message(session_id, owner, "들리나요?", 1)
        assert done.wait(30), "the other process's commit was never announced"
        assert heard == [(queued, "ReplyQueued")]
        assert announced[-1] == (queued, {session_id})
        assert {position for position, _ in announced} <= {started, queued}
        assert notifier.position == queued
    finally:
        notifier.stop()
        here.close()
        there.close()


def test_two_workers_racing_for_one_reply_record_one_claim(postgres: PostgresCluster) -> None:
    """The store's own version check, without servers: two applications (two workers) on
    one database load the chat at the same version; one claim is kept."""
    env = event_store_env(Settings(event_store=postgres.create_database()))
    first, second = ChatApplication(env=env), ChatApplication(env=env)
    try:
        owner = uuid4()
        session_id, _ = first.start_session(owner, "경주", {})
        _message, reply_id, _ = first.post_message(session_id, owner, "누가 먼저?", 1)
        mine, theirs = first.get_session(session_id), second.get_session(session_id)
        mine.claim_reply(reply_id, 1, "first")
        theirs.claim_reply(reply_id, 2, "second")
        first.save(mine)
        with pytest.raises(IntegrityError):
            second.save(theirs)

        # Through the command, the loser of the race reloads and the domain refuses it.
        another = first.post_message(session_id, owner, "한 번 더", 1)[1]
        raced: list[int] = []

        def claim_while_the_other_claims(session: ChatSession) -> None:
            if not raced:  # between this load and this save, the other worker claims
                raced.append(first.change_reply(
                    session_id, lambda s: s.claim_reply(another, 1, "first")))
            session.claim_reply(another, 2, "second")

        with pytest.raises(AlreadyClaimed):
            second.change_reply(session_id, claim_while_the_other_claims)
        assert raced
        assert second.get_session(session_id).claimed_by(another) == 1
        assert second.get_session(session_id).claimed_by(reply_id) == 1
        claims_recorded = [e for e in second.events.get(session_id)
                           if type(e).__name__ == "ReplyClaimed"]
        assert len(claims_recorded) == 2
    finally:
        first.close()
        second.close()


def test_a_reply_posted_to_one_worker_streams_to_a_client_of_the_other(
    workers: list[ServerProcess], operator: Api,
) -> None:
    a, b = workers
    on_a = Api(a.url).register()
    session = on_a.new_session(title="두 일꾼", max_tokens=40, temperature=0)
    on_b = on(b, on_a)
    visible(lambda: on_b.get(f"/api/sessions/{session['id']}/").status_code == 200)
    listener = Listener(on_b, session["id"])
    listener.start()
    assert listener.connected.wait(30) and listener.error is None, listener.error

    posted = post(on_a, session["id"], "안녕하세요! 한 문장으로 인사해 주세요.")
    reply_id = posted["reply"]["id"]
    listener.join(120)

    assert listener.error is None, listener.error
    events = [e for e in listener.events if e["data"].get("reply_id") == reply_id]
    names = [e["event"] for e in events]
    assert names[0] == "queued" and names[-1] == "done", names
    tokens = [e for e in events if e["event"] == "token"]
    # Generated once: one run of token events, each index once, and one claim.
    assert [t["data"]["index"] for t in tokens] == list(range(len(tokens)))
    assert events[-1]["data"]["content"] == "".join(t["data"]["text"] for t in tokens)
    assert len(claims(operator, session["id"], reply_id)) == 1
    started = [e for e in operator.events(type="ReplyStarted", originator_id=session["id"])
               if e["data"]["reply_id"] == reply_id]
    assert len(started) == 1
    # Positions are the log's: a client of A resuming from B's ids repeats nothing.
    middle = tokens[len(tokens) // 2]
    rest = read_until_end(on_a, session["id"], reply_id, middle["id"])
    after = [e for e in events if int(e["id"]) > int(middle["id"])]
    assert [(e["id"], e["event"], e["data"]) for e in rest] == \
        [(e["id"], e["event"], e["data"]) for e in after]


def test_a_browser_on_one_worker_shows_a_message_posted_to_the_other(
    workers: list[ServerProcess], browser: Browser,
) -> None:
    a, b = workers
    on_a = Api(a.url).register()
    session = on_a.new_session(title="브라우저", max_tokens=40, temperature=0)
    on_b = on(b, on_a)
    visible(lambda: on_b.get(f"/api/sessions/{session['id']}/").status_code == 200)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        assert on_a.token
        context.add_cookies([{"name": "session", "value": on_a.token, "url": b.url}])
        page = context.new_page()
        page.goto(f"{b.url}/chats/{session['id']}")
        expect(page.locator("#chat-title")).to_contain_text("브라우저")

        text = "안녕하세요! 한 문장으로 인사해 주세요."
        posted = post(on_a, session["id"], text)

        # The page's stream resumes from the position its snapshot reflects, so the message
        # arrives whenever the stream connects (slowly on a busy machine).
        expect(page.locator("article.message--user .message__body")).to_have_text(
            text, timeout=30_000)
        reply = page.locator("article.message--assistant").last
        expect(reply).to_have_attribute("data-status", "complete", timeout=60_000)
        stored = on_a.wait_reply(session["id"], posted["reply"]["id"])
        assert stored["content"] and reply.get_attribute("id") == f"msg-{stored['id']}"
        assert letters(reply.locator(".message__body").inner_text())
        # What the live stream left on the page is what a fresh load of worker B shows.
        assert_same_as_fresh_load(page, f"msg-{stored['id']}")
    finally:
        context.close()


def test_a_stream_resumed_on_the_other_worker_continues_where_it_stopped(
    workers: list[ServerProcess],
) -> None:
    a, b = workers
    on_a = Api(a.url).register()
    session = on_a.new_session(max_tokens=200, temperature=0.8)
    posted = post(on_a, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]
    first = read_until_end(on_a, session["id"], reply_id, posted["last_event_id"],
                           stop_after_tokens=3)  # then the connection drops

    on_b = on(b, on_a)
    visible(lambda: on_b.get(f"/api/sessions/{session['id']}/").status_code == 200)
    rest = read_until_end(on_b, session["id"], reply_id, first[-1]["id"])

    everything = first + rest
    ids = [int(e["id"]) for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    tokens = [e for e in everything if e["event"] == "token"]
    assert [t["data"]["index"] for t in tokens] == list(range(len(tokens)))
    assert everything[-1]["event"] == "done"
    assert everything[-1]["data"]["content"] == "".join(t["data"]["text"] for t in tokens)


def test_a_busy_worker_leaves_the_next_reply_to_the_other(
    workers: list[ServerProcess], operator: Api,
) -> None:
    a, _b = workers
    on_a = Api(a.url).register()
    long_chat = on_a.new_session(max_tokens=1500, temperature=0.9)
    running = post(on_a, long_chat["id"], LONG_PROMPT)
    read_until_end(on_a, long_chat["id"], running["reply"]["id"], running["last_event_id"],
                   stop_after_tokens=1)  # it runs: the worker generating it has no room
    short_chat = on_a.new_session(max_tokens=16, temperature=0)
    waiting = post(on_a, short_chat["id"], "짧게 대답해 주세요.")

    done = on_a.wait_reply(short_chat["id"], waiting["reply"]["id"])

    assert done["status"] == "complete"
    busy = claims(operator, long_chat["id"], running["reply"]["id"])
    other = claims(operator, short_chat["id"], waiting["reply"]["id"])
    assert len(busy) == 1 and len(other) == 1
    assert worker_of(busy[0], workers) is not worker_of(other[0], workers)
    on_a.post(f"/api/sessions/{long_chat['id']}/cancel/")


COUNTING = "1부터 1000까지 한 줄에 하나씩 세어 주세요. Count from 1 to 1000, one number per line."


def test_a_worker_starting_leaves_the_replies_of_live_workers_alone(
    workers: list[ServerProcess], tmp_path: Path,
) -> None:
    """A single server interrupts every open reply when it starts (a crash left them); a
    worker joining a cluster must not touch those live workers are generating."""
    a, _b = workers
    on_a = Api(a.url).register()
    session = on_a.new_session(max_tokens=1500, temperature=0)
    posted = post(on_a, session["id"], COUNTING)
    reply_id = posted["reply"]["id"]
    first = read_until_end(on_a, session["id"], reply_id, posted["last_event_id"],
                           stop_after_tokens=3)
    third = ServerProcess(tmp_path / "c", a.event_store, **a.env).start()
    try:
        on_third = on(third, on_a)
        status = next(m["status"] for m in on_third.get(
            f"/api/sessions/{session['id']}/messages/").json() if m["id"] == reply_id)
        # Still generating (or done): a reply that long outlasts a start, which took it as
        # left open by a crash before (`interrupted`).
        assert status in ("streaming", "complete"), status
        on_third.post(f"/api/sessions/{session['id']}/cancel/")
        rest = read_until_end(on_third, session["id"], reply_id, first[-1]["id"])
        assert rest[-1]["event"] in ("cancelled", "done"), rest[-1]
    finally:
        third.stop()


def test_killing_the_generating_worker_leaves_its_reply_interrupted_by_the_other(
    own_workers: list[ServerProcess],
) -> None:
    workers = own_workers
    a, _b = workers
    on_a = Api(a.url).register()  # the first user: their admin, who reads the claims
    session = on_a.new_session(title="끊긴 답", max_tokens=1500, temperature=0.9)
    posted = post(on_a, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]
    received = read_until_end(on_a, session["id"], reply_id, posted["last_event_id"],
                              stop_after_tokens=5)
    text_received = "".join(e["data"]["text"] for e in received if e["event"] == "token")
    (claim,) = claims(on_a, session["id"], reply_id)
    generating = worker_of(claim, workers)
    survivor = next(w for w in workers if w is not generating)
    on_survivor = on(survivor, on_a)
    visible(lambda: on_survivor.get(f"/api/sessions/{session['id']}/").status_code == 200)

    generating.kill()

    rest = read_until_end(on_survivor, session["id"], reply_id, received[-1]["id"])
    assert rest[-1]["event"] == "error" and rest[-1]["data"]["code"] == "interrupted"
    reply = on_survivor.wait_reply(session["id"], reply_id)
    assert reply["status"] == "interrupted"
    resumed = text_received + "".join(e["data"]["text"] for e in rest if e["event"] == "token")
    assert reply["content"] == resumed and reply["content"].startswith(text_received)
    # The survivor goes on answering.
    short = on_survivor.new_session(max_tokens=16, temperature=0)
    again = post(on_survivor, short["id"], "다시 해 볼까요?")
    assert on_survivor.wait_reply(short["id"], again["reply"]["id"])["status"] == "complete"


def test_cancelling_on_one_worker_stops_the_reply_the_other_generates(
    workers: list[ServerProcess], operator: Api,
) -> None:
    a, _b = workers
    on_a = Api(a.url).register()
    session = on_a.new_session(max_tokens=1500, temperature=0.9)
    posted = post(on_a, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]
    received = read_until_end(on_a, session["id"], reply_id, posted["last_event_id"],
                              stop_after_tokens=3)
    (claim,) = claims(operator, session["id"], reply_id)
    elsewhere = next(w for w in workers if w is not worker_of(claim, workers))
    on_elsewhere = on(elsewhere, on_a)
    visible(lambda: on_elsewhere.get(f"/api/sessions/{session['id']}/").status_code == 200)

    response = on_elsewhere.post(f"/api/sessions/{session['id']}/cancel/")

    assert response.status_code == 202, response.text
    rest = read_until_end(on_elsewhere, session["id"], reply_id, received[-1]["id"])
    assert rest[-1]["event"] == "cancelled"
    reply = on_elsewhere.wait_reply(session["id"], reply_id)
    assert reply["status"] == "cancelled"
    # The generating worker stopped: nothing of the reply's was recorded after the cancel.
    cancelled_at = int(rest[-1]["id"])
    later = operator.events(originator_id=session["id"], after=cancelled_at)
    assert [e for e in later if e["data"].get("reply_id") == reply_id] == []
