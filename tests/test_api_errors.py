"""Every way a request can be refused: the one error shape, the right status, nothing recorded."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.postgres import both_stores
from tests.server import Api, ServerProcess, assert_error

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

BIG = 5 * 1024 * 1024 + 100 * 1024  # ~5.1 MB, over the 5 MB limit


def raw(body: Any) -> dict[str, Any]:
    """Keyword arguments sending `body` as JSON with every non-ASCII character escaped, so
    lone surrogates travel as `\\ud800` exactly as a client would write them."""
    return {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}


@pytest.fixture
def session(user: Api) -> dict[str, Any]:
    return user.new_session(title="target", max_tokens=4, temperature=0)


def json_routes(session_id: str) -> list[tuple[str, str]]:
    """Every route that reads a JSON body."""
    return [
        ("POST", "/api/auth/register/"),
        ("POST", "/api/auth/login/"),
        ("PATCH", "/api/auth/me/"),
        ("POST", "/api/sessions/"),
        ("PUT", f"/api/sessions/{session_id}/"),
        ("PATCH", f"/api/sessions/{session_id}/"),
        ("POST", f"/api/sessions/{session_id}/messages/"),
    ]


# -- bodies that are not a JSON object -----------------------------------------------------

MALFORMED = [
    b"{",
    b'{"content": }',
    b'{"content": "unterminated}',
    b"{'content': 'single quotes'}",
    b'{"content": "x",}',
    b"\xff\xfe{}",
    b'\xef\xbb\xbf{"content": "BOM"}',
    b'{"content": "\xc3\x28"}',  # invalid UTF-8
    b"[" * 100_000 + b"]" * 100_000,
    b"content=hello",
]
NOT_AN_OBJECT = [b"[]", b'["content"]', b'"content"', b"42", b"null", b"true"]


@pytest.mark.parametrize("body", MALFORMED + NOT_AN_OBJECT,
                         ids=[f"m{i}" for i in range(len(MALFORMED + NOT_AN_OBJECT))])
def test_malformed_or_non_object_json_is_400_naming_the_body(
    user: Api, admin: Api, session: dict[str, Any], body: bytes
) -> None:
    before = admin.quiet_head()
    for method, path in json_routes(session["id"]):
        response = user.http.request(method, path, content=body,
                                     headers={"Content-Type": "application/json"})
        assert_error(response, 400, "invalid_json", "body")
    assert admin.head() == before


def test_an_empty_body_is_400_where_fields_are_required(
    user: Api, admin: Api, session: dict[str, Any]
) -> None:
    before = admin.quiet_head()
    for method, path in json_routes(session["id"]):
        if path == "/api/sessions/":
            continue  # creating a session needs no fields
        for body in (b"", b"  \n "):
            assert_error(user.http.request(method, path, content=body), 400, "invalid_json",
                         "body")
    assert admin.head() == before


# -- fields of the wrong type --------------------------------------------------------------

WRONG_TYPES = [
    ("temperature", "0.5"), ("temperature", True), ("temperature", [0.5]),
    ("temperature", {"value": 1}), ("top_p", "1"), ("top_p", False),
    ("max_tokens", True), ("max_tokens", 16.5), ("max_tokens", "16"), ("max_tokens", [16]),
    ("title", 5), ("title", ["x"]), ("title", True), ("system_prompt", {"x": 1}),
    ("system_prompt", 0), ("model", 1), ("model", ["SmolLM2-135M-Instruct.Q4_1"]),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_session_fields_of_the_wrong_type_are_400_naming_the_field(
    user: Api, admin: Api, session: dict[str, Any], field: str, value: Any
) -> None:
    before = admin.quiet_head()
    for method, path in (("POST", "/api/sessions/"), ("PUT", f"/api/sessions/{session['id']}/"),
                         ("PATCH", f"/api/sessions/{session['id']}/")):
        response = user.http.request(method, path, **raw({field: value}))
        assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before
    assert user.get(f"/api/sessions/{session['id']}/").json() == session


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens", "title"])
def test_nan_and_infinity_are_400_naming_the_field(
    user: Api, admin: Api, session: dict[str, Any], field: str, literal: bytes
) -> None:
    before = admin.quiet_head()
    body = b'{"%s": %s}' % (field.encode(), literal)
    for method, path in (("POST", "/api/sessions/"),
                         ("PATCH", f"/api/sessions/{session['id']}/")):
        response = user.http.request(method, path, content=body)
        assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before


def test_huge_integer_literals_are_400_not_500(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    for field in ("temperature", "top_p", "max_tokens"):
        for digits in (b"9" * 400, b"-" + b"9" * 400):
            body = b'{"%s": %s}' % (field.encode(), digits)
            assert_error(user.post("/api/sessions/", content=body), 400, "invalid_input", field)
    # Past Python's digit limit the parser itself refuses: still a 400.
    assert_error(user.post("/api/sessions/", content=b'{"top_p": ' + b"1" * 5000 + b"}"),
                 400, "invalid_json", "body")
    assert admin.head() == before


@pytest.mark.parametrize(("body", "field"), [
    ({"content": 5}, "content"),
    ({"content": ["hi"]}, "content"),
    ({"content": {"text": "hi"}}, "content"),
    ({"content": None}, "content"),
    ({"content": True}, "content"),
    ({}, "content"),
    ({"text": "hi"}, "content"),
])
def test_message_content_of_the_wrong_type_or_missing_is_400(
    user: Api, admin: Api, session: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    before = admin.quiet_head()
    response = user.post(f"/api/sessions/{session['id']}/messages/", **raw(body))
    assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before
    assert user.get(f"/api/sessions/{session['id']}/messages/").json() == []


# -- limits ----------------------------------------------------------------------------------

LIMITS: list[tuple[str, Any, bool]] = [
    ("title", "t" * 200, True), ("title", "가" * 200, True), ("title", "t" * 201, False),
    ("title", "가" * 201, False), ("title", " " * 50 + "t" * 200 + " " * 50, True),
    ("system_prompt", "s" * 8000, True), ("system_prompt", "s" * 8001, False),
    ("system_prompt", "가" * 8001, False),
    ("temperature", 0, True), ("temperature", 2, True), ("temperature", 2.0, True),
    ("temperature", -0.01, False), ("temperature", 2.01, False),
    ("temperature", 2.000001, False), ("temperature", -1, False),
    ("top_p", 0, True), ("top_p", 1, True), ("top_p", 1.0, True),
    ("top_p", -0.01, False), ("top_p", 1.01, False), ("top_p", 2, False),
    ("max_tokens", 1, True), ("max_tokens", 4095, True), ("max_tokens", 16.0, True),
    ("max_tokens", 0, False), ("max_tokens", -1, False),
    # 4,096 is the API's ceiling, but not below this model's 4,096-token context.
    ("max_tokens", 4096, False), ("max_tokens", 4097, False), ("max_tokens", 10**6, False),
    ("model", "SmolLM2-135M-Instruct.Q4_1", True), ("model", "gpt-4", False),
    ("model", "", False),
]


@pytest.mark.parametrize(("field", "value", "ok"), LIMITS)
def test_session_limits_at_and_just_past_each_edge(
    user: Api, admin: Api, session: dict[str, Any], field: str, value: Any, ok: bool
) -> None:
    path = f"/api/sessions/{session['id']}/"
    if ok:
        created = user.post("/api/sessions/", json={field: value})
        assert created.status_code == 201, created.text
        updated = user.patch(path, json={field: value})
        assert updated.status_code == 200, updated.text
        for body in (created.json(), updated.json()):
            if field == "title":
                assert body["title"] == value.strip()
            else:
                assert body["config"][field] == value
        return
    before = admin.quiet_head()
    assert_error(user.post("/api/sessions/", json={field: value}), 400, "invalid_input", field)
    assert_error(user.patch(path, json={field: value}), 400, "invalid_input", field)
    assert_error(user.put(path, json={"title": "ok", field: value}), 400, "invalid_input",
                 field)
    assert admin.head() == before
    assert user.get(path).json() == session  # nothing of a refused update was applied


def test_message_length_limit(user: Api, admin: Api, session: dict[str, Any]) -> None:
    path = f"/api/sessions/{session['id']}/messages/"
    before = admin.quiet_head()
    for content in ("x" * 32_001, "가" * 32_001, "😀" * 32_001):
        assert_error(user.post(path, json={"content": content}), 400, "invalid_input",
                     "content")
    assert admin.head() == before
    # Exactly at the limit is accepted (see test_api_messages for what becomes of it).
    accepted = user.post(path, json={"content": "x" * 32_000})
    assert accepted.status_code == 202, accepted.text
    assert len(accepted.json()["message"]["content"]) == 32_000
    user.wait_reply(session["id"], accepted.json()["reply"]["id"])


@pytest.mark.parametrize("content", ["", " ", "   \n\t  ", "\u3000", "\n"])
def test_empty_or_whitespace_messages_are_400(
    user: Api, admin: Api, session: dict[str, Any], content: str
) -> None:
    before = admin.quiet_head()
    response = user.post(f"/api/sessions/{session['id']}/messages/", json={"content": content})
    assert_error(response, 400, "invalid_input", "content")
    assert admin.head() == before


# -- characters that are not text ------------------------------------------------------------

TEXT_FIELDS = [
    ("POST", "/api/auth/register/", {"username": "okname1", "email": "a@example.com",
                                     "password": "12345678"}, "username"),
    ("POST", "/api/auth/register/", {"username": "okname1", "email": "a@example.com",
                                     "password": "12345678"}, "email"),
    ("POST", "/api/auth/register/", {"username": "okname1", "email": "a@example.com",
                                     "password": "12345678"}, "password"),
    ("POST", "/api/auth/login/", {"username": "okname1", "password": "12345678"}, "username"),
    ("POST", "/api/auth/login/", {"username": "okname1", "password": "12345678"}, "password"),
    ("PATCH", "/api/auth/me/", {}, "display_name"),
    ("PATCH", "/api/auth/me/", {}, "email"),
    ("POST", "/api/sessions/", {}, "title"),
    ("POST", "/api/sessions/", {}, "system_prompt"),
    ("POST", "/api/sessions/", {}, "model"),
    ("PATCH", "/api/sessions/{id}/", {}, "title"),
    ("PUT", "/api/sessions/{id}/", {}, "system_prompt"),
    ("POST", "/api/sessions/{id}/messages/", {}, "content"),
]


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "\udc00\ud800", "a\u0000b", "\u0000"],
                         ids=["lone-high", "lone-low", "reversed-pair", "nul", "only-nul"])
@pytest.mark.parametrize(("method", "path", "base", "field"), TEXT_FIELDS,
                         ids=[f"{m} {p} {f}" for m, p, _, f in TEXT_FIELDS])
def test_lone_surrogates_and_nul_are_400_naming_the_field(
    user: Api, admin: Api, session: dict[str, Any], method: str, path: str,
    base: dict[str, Any], field: str, bad: str
) -> None:
    before = admin.quiet_head()
    body = {**base, field: f"valid{bad}text@example.com" if field == "email" else
            f"valid{bad}text"}
    response = user.http.request(method, path.format(id=session["id"]), **raw(body),
                                 )
    assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before


def test_an_escaped_surrogate_pair_is_one_valid_character(
    user: Api, session: dict[str, Any]
) -> None:
    body = b'{"content": "smile \\ud83d\\ude00 \\uc548\\ub155"}'
    response = user.post(f"/api/sessions/{session['id']}/messages/", content=body)
    assert response.status_code == 202, response.text
    assert response.json()["message"]["content"] == "smile 😀 안녕"
    user.wait_reply(session["id"], response.json()["reply"]["id"])


# -- size ------------------------------------------------------------------------------------


def test_a_body_over_5_mb_is_413(user: Api, admin: Api, session: dict[str, Any]) -> None:
    huge = json.dumps({"content": "x" * BIG})
    before = admin.quiet_head()
    for method, path in [*json_routes(session["id"]),
                         ("POST", f"/api/sessions/{session['id']}/cancel/"),
                         ("POST", f"/api/sessions/{session['id']}/regenerate/")]:
        response = user.http.request(method, path, content=huge)
        assert_error(response, 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"content": "'
        for _ in range(BIG // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    response = user.post(f"/api/sessions/{session['id']}/messages/", content=chunks())
    assert_error(response, 413, "body_too_large")
    assert admin.head() == before
    assert user.get(f"/api/sessions/{session['id']}/messages/").json() == []


def test_a_body_just_under_the_limit_is_read(user: Api, session: dict[str, Any]) -> None:
    # 4.9 MB of JSON whose content is over the message limit: a 400, not a 413.
    body = json.dumps({"content": "z" * (5 * 1024 * 1024 - 200 * 1024)})
    response = user.post(f"/api/sessions/{session['id']}/messages/", content=body)
    assert_error(response, 400, "invalid_input", "content")


# -- 401, 403, 404, 405 ------------------------------------------------------------------------


def authed_routes(session_id: str) -> list[tuple[str, str]]:
    return [
        ("POST", "/api/auth/logout/"), ("GET", "/api/auth/me/"), ("PATCH", "/api/auth/me/"),
        ("GET", "/api/auth/me/stats/"), ("GET", "/api/sessions/"), ("POST", "/api/sessions/"),
        *session_routes(session_id),
        ("GET", "/api/admin/events/"), ("GET", "/api/admin/stats/"),
        ("GET", "/api/admin/projections/"), ("POST", "/api/admin/projections/users/rebuild/"),
    ]


def session_routes(session_id: str) -> list[tuple[str, str]]:
    base = f"/api/sessions/{session_id}/"
    return [("GET", base), ("PUT", base), ("PATCH", base), ("DELETE", base),
            ("GET", base + "messages/"), ("POST", base + "messages/"),
            ("GET", base + "stream/"), ("POST", base + "cancel/"),
            ("POST", base + "regenerate/")]


BODIES = {"PUT": {"title": "stolen"}, "PATCH": {"title": "stolen"}, "POST": {"content": "hi"}}


def call(api: Api | httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    client = api.http if isinstance(api, Api) else api
    body = BODIES.get(method) if not path.endswith(("/logout/", "/rebuild/")) else None
    return client.request(method, path, json=body, **kw)


@pytest.mark.parametrize("authorization", [
    None, "Bearer not-a-real-token", "Bearer null", "Bearer", "Basic dXNlcjpwYXNz",
    "Token abc", "bearer" + " x" * 3, "Bearer " + "a" * 4000,
])
def test_without_a_valid_token_every_route_is_401(
    server: ServerProcess, admin: Api, session: dict[str, Any], authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    before = admin.quiet_head()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for method, path in authed_routes(session["id"]):
            assert_error(call(client, method, path), 401, "not_authenticated")
    assert admin.head() == before


def test_after_logout_every_route_is_401(user: Api, admin: Api,
                                         session: dict[str, Any]) -> None:
    assert user.post("/api/auth/logout/").status_code == 204
    before = admin.quiet_head()
    for method, path in authed_routes(session["id"]):
        assert_error(call(user, method, path), 401, "not_authenticated")
    assert admin.head() == before


def test_a_non_admin_gets_403_on_every_admin_route(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    for method, path in (("GET", "/api/admin/events/"), ("GET", "/api/admin/stats/"),
                         ("GET", "/api/admin/projections/"),
                         ("POST", "/api/admin/projections/users/rebuild/"),
                         ("POST", "/api/admin/projections/nope/rebuild/"),
                         ("GET", "/api/admin/events/?type=User.Registered&limit=1000")):
        assert_error(call(user, method, path), 403, "forbidden")
    assert admin.head() == before


def test_someone_elses_session_is_404_on_every_route(
    user: Api, anon: Api, admin: Api
) -> None:
    owner = anon.register()
    target = owner.new_session(title="private", max_tokens=4, temperature=0)
    posted = owner.post_message(target["id"], "my secret")
    owner.wait_reply(target["id"], posted["reply"]["id"])
    target = owner.get(f"/api/sessions/{target['id']}/").json()
    messages = owner.get(f"/api/sessions/{target['id']}/messages/").json()

    before = admin.quiet_head()
    answers = []
    for method, path in session_routes(target["id"]):
        answers.append(assert_error(call(user, method, path), 404, "not_found"))
    assert admin.head() == before
    # Indistinguishable from a session that does not exist.
    for (method, path), answer in zip(session_routes(str(uuid.uuid4())), answers, strict=True):
        assert assert_error(call(user, method, path), 404, "not_found") == answer
    assert admin.head() == before
    assert owner.get(f"/api/sessions/{target['id']}/").json() == target
    assert owner.get(f"/api/sessions/{target['id']}/messages/").json() == messages
    assert user.get("/api/sessions/", params={"q": "secret"}).json() == []


@pytest.mark.parametrize("bad_id", [
    "not-a-uuid", "12345", "..", "%2e%2e", "%00", "%ff", "세션", "x" * 5000,
    "00000000-0000-0000-0000-00000000000g", "{0}", "null", "undefined",
])
def test_a_non_uuid_session_id_is_404_on_every_route(user: Api, admin: Api,
                                                     bad_id: str) -> None:
    before = admin.quiet_head()
    for method, path in session_routes(bad_id):
        response = call(user, method, path)
        if response.status_code == 405:  # ".." can resolve to another path
            continue
        assert_error(response, 404, "not_found")
    assert admin.head() == before


def test_a_deleted_session_is_404_on_every_route(user: Api, admin: Api,
                                                 session: dict[str, Any]) -> None:
    assert user.delete(f"/api/sessions/{session['id']}/").status_code == 204
    before = admin.quiet_head()
    for method, path in session_routes(session["id"]):
        assert_error(call(user, method, path), 404, "not_found")
    assert admin.head() == before


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/api/sessions/"), ("PUT", "/api/sessions/"),
    ("PUT", "/api/auth/me/"), ("DELETE", "/api/auth/me/"), ("POST", "/api/auth/me/stats/"),
    ("GET", "/api/auth/login/"), ("GET", "/api/auth/register/"), ("GET", "/api/auth/logout/"),
    ("POST", "/healthz"), ("GET", "/api/sessions/{id}/cancel/"),
    ("GET", "/api/sessions/{id}/regenerate/"), ("POST", "/api/sessions/{id}/stream/"),
    ("DELETE", "/api/sessions/{id}/messages/"), ("POST", "/api/sessions/{id}/"),
    ("POST", "/api/admin/events/"), ("DELETE", "/api/admin/stats/"),
    ("GET", "/api/admin/projections/users/rebuild/"), ("POST", "/api/admin/projections/"),
])
def test_a_wrong_method_is_405(user: Api, admin: Api, session: dict[str, Any], method: str,
                               path: str) -> None:
    before = admin.quiet_head()
    response = user.http.request(method, path.format(id=session["id"]))
    error = assert_error(response, 405, "method_not_allowed")
    assert method not in response.headers["Allow"]
    assert method in error["message"]
    assert admin.head() == before


def test_an_unknown_api_path_is_404_json(user: Api) -> None:
    for path in ("/api/nope/", "/api/sessions/x/y/z/", "/api/admin/"):
        assert_error(user.get(path), 404, "not_found")


# -- the model is not loaded -------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose model file is missing, with a larger configured context."""
    data = tmp_path_factory.mktemp("no-model")
    process = ServerProcess(data, MODEL_PATH=str(data / "missing.gguf"), N_CTX="8192")
    process.start()
    yield process
    process.stop()


def test_healthz_reports_the_model(server: ServerProcess, no_model: ServerProcess) -> None:
    for process, loaded in ((server, True), (no_model, False)):
        response = httpx.get(f"{process.url}/healthz", timeout=10)
        assert response.status_code == 200
        # API.md's fields; the read models' and DATA_DIR's state are reported beside them.
        assert response.json() == {"status": "ok", "model_loaded": loaded, "event_store": "ok",
                                   "projections": "ok", "data_dir": "ok"}


def test_without_a_model_replies_are_503_and_nothing_is_recorded(
    no_model: ServerProcess,
) -> None:
    first = Api(no_model.url).register("no_model_admin")
    assert first.get("/api/auth/me/").json()["is_admin"] is True
    other = Api(no_model.url).register()
    assert other.get("/api/auth/me/").json()["is_admin"] is False
    assert first.get("/api/admin/stats/").json()["model"] is None

    session = other.new_session(title="no model")
    assert session["config"]["model"] == "missing"
    before = first.quiet_head()
    for path, body in ((f"/api/sessions/{session['id']}/messages/", {"content": "hello?"}),
                       (f"/api/sessions/{session['id']}/regenerate/", None)):
        response = other.post(path, json=body)
        error = assert_error(response, 503, "model_not_loaded")
        # Clear, but the model's file path stays in the server log (issue 7, item 9).
        assert "model" in error["message"] and "missing.gguf" not in error["message"]
        assert int(response.headers["Retry-After"]) >= 1
    assert first.head() == before
    assert other.get(f"/api/sessions/{session['id']}/messages/").json() == []
    assert other.get(f"/api/sessions/{session['id']}/").json()["message_count"] == 0


def test_max_tokens_may_reach_4096_when_the_context_is_larger(no_model: ServerProcess) -> None:
    api = Api(no_model.url).register()
    assert api.new_session(max_tokens=4096)["config"]["max_tokens"] == 4096
    assert_error(api.post("/api/sessions/", json={"max_tokens": 4097}), 400, "invalid_input",
                 "max_tokens")


# -- no 500 for anything a client can send ----------------------------------------------------

ODD_BODIES = [
    b"", b"{}", b"null", b"[]", b"{}{}", b"\x00", b"\xff" * 10, b"{\"a\":1}" * 3,
    b'{"content": "\\u0000"}', b'{"content": "\\ud800\\ud800"}', b'{"content": 1e999}',
    b'{"title": -0.0, "temperature": -0.0}', b'{"max_tokens": 1e20}', b'{"max_tokens": -1e20}',
    b'{"top_p": 1e-320}', b'{"__proto__": {"admin": true}}', b'{"content": "' + b"a" * 1000
    + b'", "content": 5}', b'{"' + b"k" * 10000 + b'": 1}', b'{"username": "a", "password": '
    + b'"b", "email": "c"}', b'{"email": "@", "display_name": "\\t\\n"}',
    b'{"content": {"$gt": ""}}', b'{"temperature": "NaN"}', b'{"model": null, "title": null}',
    "{\"title\": \"\u202e\u0301\u200b\"}".encode(), b"\xef\xbb\xbf", b"{" * 5000,
    b'{"content": "' + b"\\" * 3 + b'"}', b'{"a": [' + b"1," * 50_000 + b"1]}",
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=[f"b{i}" for i in range(len(ODD_BODIES))])
def test_odd_bodies_never_cause_a_500(user: Api, session: dict[str, Any], body: bytes) -> None:
    for method, path in json_routes(session["id"]):
        for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
            response = user.http.request(method, path, content=body,
                                         headers={"Content-Type": content_type,
                                                  "X-Forwarded-For": "10.250.0.1"})
            assert response.status_code < 500, (method, path, body[:80], response.text)
            if response.status_code >= 400:
                assert_error(response, response.status_code)
    user.post(f"/api/sessions/{session['id']}/cancel/")


ODD_QUERIES = [
    "/api/sessions/?limit=1e3", "/api/sessions/?limit=0x10", "/api/sessions/?limit=%EF%BC%99",
    "/api/sessions/?limit=" + "1" * 5000, "/api/sessions/?q=%25_%5C%27%22%3B%20--",
    "/api/sessions/?q=%00", "/api/sessions/?q=%ED%B3%BF", "/api/sessions/?q=%ff%fe",
    "/api/sessions/?limit=%205%20", "/api/sessions/?limit=5&limit=x", "/api/sessions/?q",
    "/api/admin/events/?after=" + "9" * 30, "/api/admin/events/?type=%ED%95%9C%EA%B8%80",
    "/api/admin/events/?type=%00", "/api/admin/events/?originator_id=%7B%7D",
    "/api/admin/events/?originator_id=" + "0" * 32, "/api/admin/events/?limit=-0",
    "/api/admin/events/?type=..........", "/api/admin/events/?type=%5Babc%5D",
    "/api/admin/events/?originator_id=%ED%B3%BF", "/api/admin/events/?after=&limit=&type=",
]


@pytest.mark.parametrize("url", ODD_QUERIES, ids=[f"q{i}" for i in range(len(ODD_QUERIES))])
def test_odd_query_strings_never_cause_a_500(admin: Api, url: str) -> None:
    response = admin.get(url)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error(response, 400, "invalid_input")


def test_odd_headers_never_cause_a_500(user: Api, session: dict[str, Any]) -> None:
    stream = f"/api/sessions/{session['id']}/stream/"
    for value in ("abc", "-1", "1" * 5000, "1.5", "0x10", "１２".encode(), b"\xff", "0"):
        with user.http.stream("GET", stream, headers={"Last-Event-ID": value}) as response:
            if response.status_code == 200:  # a valid position opens the stream: fine
                continue
            response.read()
            assert_error(response, 400, "invalid_input", "last_event_id")
    for headers in ({"Content-Type": "application/json; charset=latin-1"},
                    {"Cookie": "session=garbage"}, {"Accept": "text/html"},
                    {"X-Forwarded-For": "not-an-ip"}, {"Authorization": "Bearer é".encode()},
                    {"Cookie": "session=" + "x" * 4000}):
        response = user.post("/api/sessions/", content=b"{}", headers=headers)
        assert response.status_code < 500, (headers, response.text)


@pytest.mark.parametrize("last_id", ["9223372036854775808", "9" * 40])
def test_a_resume_position_beyond_any_event_is_refused(
    user: Api, session: dict[str, Any], last_id: str
) -> None:
    # No log position is over SQLite's INTEGER range; such an id was never sent by us.
    with user.http.stream("GET", f"/api/sessions/{session['id']}/stream/",
                          headers={"Last-Event-ID": last_id}) as response:
        response.read()
        assert_error(response, 400, "invalid_input", "last_event_id")
