"""The remote engine: this project served by a second instance of itself over `/v1`.

Server A runs the real model; server B has `ENGINE_URL` pointing at A's `/v1`, with a
bearer token of A's first user (its admin) as `ENGINE_API_KEY`. A reply posted on B is
written by A, streamed into B's events, and recorded in both logs.
"""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.inference import remote_engine
from app.inference.engine import ContextTooLong, Turn
from app.inference.jobs import Done, Event, Failed, GenerationRequest, Started, Text
from app.inference.remote_engine import RemoteEngine, estimate_tokens, fit_turns, parse_urls
from app.inference.sampling import GenerationParams
from tests.server import Api, ServerProcess, free_port, sse_events

KOREAN = "안녕하세요! 서울의 가을 날씨를 한 문장으로 알려 주세요."
WAIT = 300  # seconds: generous, the machine's cores are shared


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Server A: the real model, answering on /v1."""
    process = ServerProcess(tmp_path_factory.mktemp("remote-a")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def remote_admin(remote: ServerProcess) -> Api:
    return Api(remote.url).register("remote_admin")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, remote: ServerProcess,
          remote_admin: Api) -> Iterator[ServerProcess]:
    """Server B: no model of its own in use, every reply written by A."""
    assert remote_admin.token is not None
    process = ServerProcess(tmp_path_factory.mktemp("front-b"), ENGINE_URL=f"{remote.url}/v1",
                            ENGINE_API_KEY=remote_admin.token, ENGINE_PARALLEL="2").start()
    yield process
    process.stop()


def read_reply(api: Api, session_id: str, reply_id: str,
               last_event_id: int) -> list[dict[str, Any]]:
    """The reply's events on the session's SSE stream, up to its end."""
    seen: list[dict[str, Any]] = []
    with api.http.stream("GET", f"/api/sessions/{session_id}/stream/",
                         headers={"Last-Event-ID": str(last_event_id)},
                         timeout=httpx.Timeout(WAIT, read=WAIT)) as response:
        assert response.status_code == 200
        for event in sse_events(response):
            if event["data"].get("reply_id") != reply_id:
                continue
            seen.append(event)
            if event["event"] in ("done", "error", "cancelled"):
                break
    return seen


def test_a_reply_is_written_by_the_remote_instance(front: ServerProcess,
                                                   remote_admin: Api) -> None:
    user = Api(front.url).register()
    session = user.new_session(temperature=0, max_tokens=24)
    posted = user.post_message(session["id"], KOREAN)
    reply_id = posted["reply"]["id"]

    events = read_reply(user, session["id"], reply_id, posted["last_event_id"])

    assert events[-1]["event"] == "done", events[-1]
    done = events[-1]["data"]
    tokens = [e["data"]["text"] for e in events if e["event"] == "token"]
    assert done["content"].strip() and done["content"] == "".join(tokens)
    stored = user.wait_reply(session["id"], reply_id, WAIT)
    assert stored["status"] == "complete" and stored["content"] == done["content"]
    assert stored["metadata"]["model_version"] == "SmolLM2-135M-Instruct.Q4_1"
    assert stored["metadata"]["prompt_template"] == "remote"

    # A's log holds the same generation: a hidden /v1 session with the Korean question
    # (B's system prompt beside it) and a completed reply with exactly B's text.
    started = [e for e in remote_admin.events(type="ChatSession.Started")
               if e["data"]["config"].get("api") == "chat.completions"]
    asked = [e for e in remote_admin.events(type="ChatSession.UserMessagePosted")
             if e["data"]["content"] == KOREAN]
    assert len(asked) == 1
    session_a = asked[0]["originator_id"]
    assert any(e["originator_id"] == session_a for e in started)
    completed = [e for e in remote_admin.events(type="ChatSession.ReplyCompleted")
                 if e["originator_id"] == session_a]
    assert [e["data"]["content"] for e in completed] == [done["content"]]


def test_remote_stopped_mid_reply_fails_it_clearly_and_the_next_one_works(
        front: ServerProcess, remote: ServerProcess, remote_admin: Api) -> None:
    user = Api(front.url).register()
    # Temperature 2 over the whole vocabulary: the end-of-turn token is unlikely for a
    # long while, so A is still writing when it is killed after B's first token.
    session = user.new_session(temperature=2, top_p=1, max_tokens=400)
    posted = user.post_message(session["id"], "아주 긴 이야기를 써 주세요.")
    reply_id = posted["reply"]["id"]
    seen: list[dict[str, Any]] = []
    with user.http.stream("GET", f"/api/sessions/{session['id']}/stream/",
                          headers={"Last-Event-ID": str(posted["last_event_id"])},
                          timeout=httpx.Timeout(WAIT, read=WAIT)) as response:
        for event in sse_events(response):
            if event["data"].get("reply_id") != reply_id:
                continue
            seen.append(event)
            if event["event"] == "token" and sum(e["event"] == "token" for e in seen) == 1:
                remote.kill()  # kill -9: A's connection drops mid-reply
            if event["event"] in ("done", "error", "cancelled"):
                break

    assert seen[-1]["event"] == "error", seen[-1]
    error = seen[-1]["data"]
    assert error["code"] == "engine_lost"
    assert error["message"] == remote_engine.LOST
    assert str(remote.port) not in error["message"] and "http" not in error["message"]
    stored = user.wait_reply(session["id"], reply_id, WAIT)
    assert stored["status"] == "failed"
    assert stored["content"] == "".join(e["data"]["text"] for e in seen
                                        if e["event"] == "token")

    # While A is down, a reply fails at once with "could not be reached".
    down = user.post_message(session["id"], "지금은 서버가 꺼져 있나요?")
    events = read_reply(user, session["id"], down["reply"]["id"], down["last_event_id"])
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["code"] == "engine_unreachable"
    assert events[-1]["data"]["message"] == remote_engine.UNREACHABLE

    remote.start()  # the same port, the same data: A's token still signs in
    again = user.post_message(session["id"], KOREAN)
    reply = user.wait_reply(session["id"], again["reply"]["id"], WAIT)
    assert reply["status"] == "complete" and reply["content"].strip()


def test_cancel_on_the_front_cancels_the_remote_reply(front: ServerProcess,
                                                      remote_admin: Api) -> None:
    """Cancelling on B closes the connection; A records its reply as cancelled."""
    user = Api(front.url).register()
    session = user.new_session(temperature=2, top_p=1, max_tokens=400)
    question = "취소될 긴 답장을 써 주세요."
    posted = user.post_message(session["id"], question)
    reply_id = posted["reply"]["id"]
    with user.http.stream("GET", f"/api/sessions/{session['id']}/stream/",
                          headers={"Last-Event-ID": str(posted["last_event_id"])},
                          timeout=httpx.Timeout(WAIT, read=WAIT)) as response:
        for event in sse_events(response):
            if event["data"].get("reply_id") == reply_id and event["event"] == "token":
                assert user.post(f"/api/sessions/{session['id']}/cancel/").status_code == 202
                break
    assert user.wait_reply(session["id"], reply_id, WAIT)["status"] == "cancelled"

    asked = [e for e in remote_admin.events(type="ChatSession.UserMessagePosted")
             if e["data"]["content"] == question]
    assert len(asked) == 1
    session_a = asked[0]["originator_id"]
    remote_admin.quiet_head(WAIT)  # A has recorded the end of its reply
    ends = [e["type"] for e in remote_admin.events(originator_id=session_a)
            if e["type"].startswith("ChatSession.Reply") and e["type"] not in (
                "ChatSession.ReplyQueued", "ChatSession.ReplyStarted")]
    assert ends == ["ChatSession.ReplyCancelled"]


def test_several_urls_serve_one_queue_and_skip_one_that_is_down(
        remote: ServerProcess, remote_admin: Api) -> None:
    """Two replies at once, one server place each: a URL where nothing listens is refused
    and skipped, and the two live URLs (A, spelled twice) take one reply each."""
    assert remote_admin.token is not None
    dead = f"http://127.0.0.1:{free_port()}"
    engine = RemoteEngine(parse_urls(f"{dead}, {remote.url}, {remote.url}/v1/"),
                          remote_admin.token, parallel=1)
    try:
        assert engine.n_parallel == 3
        assert engine.info.id == "SmolLM2-135M-Instruct.Q4_1"
        prompt = engine.prepare("", [Turn("user", KOREAN)], 16)
        request = GenerationRequest(prompt.tokens, GenerationParams(0.0, 1.0, prompt.max_tokens),
                                    turns=prompt.turns)
        runs = [queue.Queue[Event]() for _ in range(2)]
        for events in runs:
            engine.submit(request, events.put)
        ends = [drain(run) for run in runs]
        served = [endpoint.served for endpoint in engine.endpoints]
    finally:
        engine.close()
    assert served == [0, 1, 1]
    for seen in ends:
        assert isinstance(seen[0], Started)
        assert isinstance(seen[-1], Done) and seen[-1].reason in ("stop", "length")
        assert "".join(e.text for e in seen if isinstance(e, Text)).strip()
        assert sum(e.tokens for e in seen if isinstance(e, Text)) >= 1


def test_a_key_the_remote_refuses_fails_the_reply_without_internals(
        remote: ServerProcess) -> None:
    engine = RemoteEngine([remote.url], "not-a-token-of-a")
    try:
        assert engine.info.id == "remote"  # /v1/models refused too: the fallback id
        prompt = engine.prepare("", [Turn("user", KOREAN)], 16)
        events = run_job(engine, GenerationRequest(
            prompt.tokens, GenerationParams(0.0, 1.0, prompt.max_tokens), turns=prompt.turns))
    finally:
        engine.close()
    assert events[-1] == Failed("engine_refused", remote_engine.REFUSED)


def run_job(engine: RemoteEngine, request: GenerationRequest,
            cancel_when: threading.Event | None = None) -> list[Event]:
    """The job's events up to its end; cancelled once `cancel_when` is set, if given."""
    events: queue.Queue[Event] = queue.Queue()
    job = engine.submit(request, events.put)
    if cancel_when is not None:
        assert cancel_when.wait(WAIT)
        job.cancel()
    return drain(events)


def drain(events: queue.Queue[Event]) -> list[Event]:
    seen: list[Event] = []
    while True:
        event = events.get(timeout=WAIT)
        seen.append(event)
        if isinstance(event, Done | Failed):
            return seen


# -- fitting the prompt (no server) ------------------------------------------------------


def test_estimate_errs_high_for_korean_and_english() -> None:
    assert estimate_tokens("안녕") == 6  # one per UTF-8 byte
    assert estimate_tokens("hello") == 2
    assert estimate_tokens("") == 0


def test_fit_drops_the_oldest_turns_by_the_estimate() -> None:
    history = [Turn("user", "가" * 100), Turn("assistant", "나" * 100), Turn("user", "다")]
    whole = fit_turns("시스템", history, 16, n_ctx=2000)
    assert whole.dropped_turns == 0 and whole.turns[0] == Turn("system", "시스템")
    assert list(whole.turns[1:]) == history and whole.max_tokens == 16
    assert len(whole.tokens) == estimate_tokens("시스템") + 300 + 300 + 3 + 4 * 4 + 8
    cut = fit_turns("시스템", history, 16, n_ctx=100)
    assert cut.dropped_turns == 2 and list(cut.turns) == [Turn("system", "시스템"), history[2]]
    assert cut.max_tokens == 16
    with pytest.raises(ContextTooLong):
        fit_turns("", [Turn("user", "가" * 100)], 16, n_ctx=100)


def test_parse_urls() -> None:
    assert parse_urls(" http://a:1/v1/ ,http://b:2, ") == ["http://a:1", "http://b:2"]
    assert parse_urls("") == []


# -- failures the real server cannot be made to produce: a local stub ----------------------


class Stub(http.server.ThreadingHTTPServer):
    """A stand-in OpenAI server for answers a real LocalChat never gives on demand (busy, a
    context error by type as llama-server words it, a stream that hangs, a chunk of several
    tokens). It lists one model."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked = threading.Event()  # a hanging stream has begun
        self.closed = threading.Event()  # the client closed a hanging stream
        super().__init__(("127.0.0.1", 0), StubHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StubHandler(http.server.BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send(200, {"object": "list", "data": [{"id": "stub-model", "max_model_len": 512}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        answer = self.server.answer
        if answer == "busy":
            self.send(503, {"error": {"message": "busy at http://internal:9/"}})
        elif answer == "too_long":
            self.send(400, {"error": {"type": "exceed_context_size_error", "message": "x"}})
        elif answer in ("hang", "pieces"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if answer == "pieces":  # one chunk carries several tokens; usage counts them
                for data in ({"choices": [{"delta": {"content": "안녕"}}]},
                             {"choices": [{"delta": {"content": "하세요"},
                                           "finish_reason": "length"}]},
                             {"choices": [], "usage": {"completion_tokens": 7}}):
                    self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            try:
                self.wfile.write(b": waiting\n\n")
                self.wfile.flush()
                self.server.asked.set()  # the client is reading the stream now
                while True:  # nothing more until the client goes away
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    self.server.closed.wait(0.2)
            except OSError:
                self.server.closed.set()


def stub_job(answer: str, **request: Any) -> tuple[Stub, list[Event]]:
    stub = Stub(answer)
    engine = RemoteEngine([stub.url], "key")
    try:
        assert engine.info.id == "stub-model" and engine.info.n_ctx == 512
        cancel = request.pop("cancel", False)
        events = run_job(engine, GenerationRequest(
            [0], GenerationParams(0.5, 1.0, 16), turns=(Turn("user", KOREAN),), **request),
            cancel_when=stub.asked if cancel else None)
    finally:
        engine.close()
        stub.shutdown()
    return stub, events


@pytest.mark.parametrize(("answer", "code", "message"), [
    ("busy", "engine_busy", remote_engine.BUSY),
    ("too_long", "context_too_long", remote_engine.TOO_LONG),
])
def test_refusals_become_clear_failures(answer: str, code: str, message: str) -> None:
    _stub, events = stub_job(answer)
    assert events[-1] == Failed(code, message)


def test_usage_counts_tokens_of_multi_token_chunks() -> None:
    _stub, events = stub_job("pieces")
    texts = [e for e in events if isinstance(e, Text)]
    assert "".join(e.text for e in texts) == "안녕하세요"
    assert sum(e.tokens for e in texts) == 7
    assert events[-1] == Done("length")


def test_a_hanging_stream_times_out_and_its_connection_is_closed() -> None:
    stub, events = stub_job("hang", first_token_timeout=1.0)
    assert isinstance(events[-1], Failed) and events[-1].code == "timeout"
    assert stub.closed.wait(10)


def test_cancel_closes_a_hanging_stream() -> None:
    stub, events = stub_job("hang", cancel=True)
    assert events[-1] == Done("cancelled")
    assert stub.closed.wait(10)


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as sock:  # a port surely closed: bound, never listening
        sock.bind(("127.0.0.1", 0))
        engine = RemoteEngine([f"http://127.0.0.1:{sock.getsockname()[1]}"], "", model="m")
        try:
            assert engine.info.id == "m"
            events = run_job(engine, GenerationRequest(
                [0], GenerationParams(0.5, 1.0, 16), turns=(Turn("user", KOREAN),)))
        finally:
            engine.close()
    assert events[-1] == Failed("engine_unreachable", remote_engine.UNREACHABLE)


def test_readme_lists_the_engine_settings() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in ("ENGINE_URL", "ENGINE_API_KEY", "ENGINE_PARALLEL", "ENGINE_MODEL"):
        assert f"`{name}`" in readme
