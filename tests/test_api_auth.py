"""Accounts over the JSON API: register, sign in and out, the profile and usage stats."""

from __future__ import annotations

import itertools
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from app import security
from tests.clock import Clock
from tests.postgres import both_stores
from tests.server import Api, ServerProcess, assert_error, is_iso_utc

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

PASSWORD = "correct horse"
_addresses = itertools.count(1)


def new_address() -> str:
    """A client address of its own (uvicorn trusts X-Forwarded-For from 127.0.0.1), so one
    test's failed sign-ins never rate-limit another's."""
    n = next(_addresses) + uuid.uuid4().int % 50_000
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def login(api: Api, username: str, password: str, address: str | None = None) -> httpx.Response:
    return api.post("/api/auth/login/", json={"username": username, "password": password},
                    headers={"X-Forwarded-For": address or new_address()})


def unique_name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def test_register_answers_201_with_the_account_and_a_token(anon: Api, admin: Api) -> None:
    name = unique_name()
    before = admin.quiet_head()
    response = anon.post("/api/auth/register/", json={
        "username": name, "email": f"  {name}@Example.com ", "password": "12345678"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "username", "email", "created_at", "token"}
    assert body["username"] == name
    assert body["email"] == f"{name}@Example.com"  # trimmed, otherwise kept as given
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert is_iso_utc(body["created_at"])
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    # Registered and signed in: the user, its name claim, and the sign-in.
    types = [e["type"] for e in admin.events(after=before)]
    assert types == ["User.Registered", "UsernameIndex.Claimed", "User.LoggedIn"]
    me = Api(anon.url, body["token"]).get("/api/auth/me/")
    assert me.status_code == 200 and me.json()["id"] == body["id"]


def test_first_user_is_admin_and_later_ones_are_not(admin: Api, user: Api) -> None:
    assert admin.get("/api/auth/me/").json()["is_admin"] is True
    assert user.get("/api/auth/me/").json()["is_admin"] is False
    assert admin.get("/api/admin/stats/").status_code == 200
    assert user.get("/api/admin/stats/").status_code == 403


def test_login_answers_a_new_token_and_the_user(anon: Api, user: Api) -> None:
    name = user.user["username"]
    response = login(anon, name, PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "user"}
    assert body["user"] == {"id": user.user["id"], "username": name,
                            "email": f"{name}@example.com", "is_admin": False}
    assert body["token"] != user.token
    second = Api(anon.url, body["token"])
    assert second.get("/api/auth/me/").json()["username"] == name
    # Usernames are case-insensitive for signing in too; the original spelling is kept.
    upper = login(anon, name.upper(), PASSWORD)
    assert upper.status_code == 200 and upper.json()["user"]["username"] == name
    # Both earlier tokens still work: each sign-in is its own token.
    assert user.get("/api/auth/me/").status_code == 200
    assert second.get("/api/auth/me/").status_code == 200


def test_logout_answers_204_and_the_token_stops_working_at_once(anon: Api, user: Api,
                                                                admin: Api) -> None:
    other = Api(anon.url, login(anon, user.user["username"], PASSWORD).json()["token"])
    before = admin.quiet_head()
    response = user.post("/api/auth/logout/")
    assert response.status_code == 204
    assert response.content == b""
    assert [e["type"] for e in admin.events(after=before)] == ["User.LoggedOut"]
    assert_error(user.get("/api/auth/me/"), 401, "not_authenticated")
    assert_error(user.get("/api/sessions/"), 401, "not_authenticated")
    assert_error(user.post("/api/auth/logout/"), 401, "not_authenticated")
    # Only that token: the user's other sign-in goes on working.
    assert other.get("/api/auth/me/").status_code == 200


def test_me_shape(user: Api) -> None:
    response = user.get("/api/auth/me/")
    assert response.status_code == 200
    me = response.json()
    assert set(me) == {"id", "username", "email", "display_name", "is_admin", "created_at"}
    assert me["id"] == user.user["id"] and me["username"] == user.user["username"]
    assert me["email"] == user.user["email"] and me["display_name"] == ""
    assert me["is_admin"] is False and me["created_at"] == user.user["created_at"]


def test_patch_me_updates_email_and_display_name(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    response = user.patch("/api/auth/me/", json={"display_name": "  김민준 🙂 ",
                                                 "email": "kim@example.org"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "username", "email", "display_name", "is_admin", "created_at"}
    assert body["display_name"] == "김민준 🙂" and body["email"] == "kim@example.org"
    assert user.get("/api/auth/me/").json() == body
    [updated] = admin.events(after=before)
    assert updated["type"] == "User.ProfileUpdated"
    assert updated["data"]["changes"] == {"email": "kim@example.org", "display_name": "김민준 🙂"}

    only_name = user.patch("/api/auth/me/", json={"display_name": "Min"})
    assert only_name.json()["email"] == "kim@example.org"
    assert only_name.json()["display_name"] == "Min"
    # Nothing new: 200, the same profile, no event.
    head = admin.quiet_head()
    same = user.patch("/api/auth/me/", json={"display_name": "Min", "email": "kim@example.org"})
    assert same.status_code == 200 and same.json() == only_name.json()
    assert user.patch("/api/auth/me/", json={}).json() == only_name.json()
    assert admin.head() == head
    # An empty display name clears it.
    assert user.patch("/api/auth/me/", json={"display_name": ""}).json()["display_name"] == ""


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "not-an-email"}, "email"),
    ({"email": ""}, "email"),
    ({"email": 5}, "email"),
    ({"email": "a@b.c" + "x" * 260}, "email"),
    ({"display_name": "x" * 65}, "display_name"),
    ({"display_name": ["x"]}, "display_name"),
    ({"display_name": "a\u0000b"}, "display_name"),
])
def test_patch_me_rejects_bad_fields(user: Api, admin: Api, body: dict[str, Any],
                                     field: str) -> None:
    before = admin.quiet_head()
    assert_error(user.patch("/api/auth/me/", json=body), 400, "invalid_input", field)
    assert admin.head() == before
    assert user.get("/api/auth/me/").json()["email"] == user.user["email"]


def test_display_name_limit_is_64(user: Api) -> None:
    assert user.patch("/api/auth/me/", json={"display_name": "가" * 64}).status_code == 200
    assert user.get("/api/auth/me/").json()["display_name"] == "가" * 64


def test_me_stats_count_the_callers_own_usage(user: Api, anon: Api) -> None:
    empty = user.get("/api/auth/me/stats/")
    assert empty.status_code == 200
    assert empty.json() == {"sessions": 0, "messages": 0, "tokens_generated": 0,
                            "avg_processing_time": 0.0}
    session = user.new_session(max_tokens=16, temperature=0)
    user.new_session(title="empty one")
    posted = user.post_message(session["id"], "Say hi.")
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["status"] == "complete"
    stats = user.get("/api/auth/me/stats/").json()
    assert set(stats) == {"sessions", "messages", "tokens_generated", "avg_processing_time"}
    assert stats["sessions"] == 2 and stats["messages"] == 2
    assert stats["tokens_generated"] == reply["token_count"] > 0
    assert stats["avg_processing_time"] == pytest.approx(reply["processing_time"], abs=1e-3)
    assert isinstance(stats["avg_processing_time"], float)
    # Someone else's usage is not counted.
    assert anon.register().get("/api/auth/me/stats/").json()["sessions"] == 0
    # A deleted session no longer counts.
    assert user.delete(f"/api/sessions/{session['id']}/").status_code == 204
    after = user.get("/api/auth/me/stats/").json()
    assert after == {"sessions": 1, "messages": 0, "tokens_generated": 0,
                     "avg_processing_time": 0.0}


# -- registration rules --------------------------------------------------------------------


@pytest.mark.parametrize("username", ["abc", "A_b.c-9", "x" * 32, "0123"])
def test_register_accepts_usernames_within_the_rules(anon: Api, username: str) -> None:
    name = username if len(username) > 4 else username + uuid.uuid4().hex[:4]
    if len(username) == 32:
        name = uuid.uuid4().hex  # 32 characters, unique
    elif username == "abc":
        name = "u" + uuid.uuid4().hex[:2]  # exactly 3 characters
    response = anon.post("/api/auth/register/", json={
        "username": name, "email": "ok@example.com", "password": "12345678"})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == name


@pytest.mark.parametrize(("body", "field"), [
    ({"username": "ab", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "x" * 33, "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "has space", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "한국어이름", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "a/b/c", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "bad\u0000nul", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": 123456, "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "okname", "email": "nope", "password": PASSWORD}, "email"),
    ({"username": "okname", "email": "a@b", "password": PASSWORD}, "email"),
    ({"username": "okname", "email": "a b@c.de", "password": PASSWORD}, "email"),
    ({"username": "okname", "password": PASSWORD}, "email"),
    ({"username": "okname", "email": "a@example.com", "password": "1234567"}, "password"),
    ({"username": "okname", "email": "a@example.com", "password": 12345678}, "password"),
    ({"username": "okname", "email": "a@example.com"}, "password"),
    ({"username": "okname", "email": "a@example.com", "password": "\ud800" * 8}, "password"),
])
def test_register_rejects_bad_fields(anon: Api, admin: Api, body: dict[str, Any],
                                     field: str) -> None:
    before = admin.quiet_head()
    response = anon.post("/api/auth/register/", content=json.dumps(body))
    assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before


def test_register_rejects_a_taken_username_in_any_case(anon: Api, user: Api,
                                                       admin: Api) -> None:
    name = user.user["username"]
    before = admin.quiet_head()
    for taken in (name, name.upper(), name.capitalize()):
        response = anon.post("/api/auth/register/", json={
            "username": taken, "email": "other@example.com", "password": "other password"})
        assert_error(response, 409, "username_taken", "username")
    assert admin.head() == before
    # The original account is untouched: its password still signs in.
    assert login(anon, name, PASSWORD).status_code == 200


# -- failed sign-ins -----------------------------------------------------------------------


def test_a_failed_sign_in_for_a_known_user_is_recorded(anon: Api, user: Api,
                                                       admin: Api) -> None:
    address = new_address()
    before = admin.quiet_head()
    assert_error(login(anon, user.user["username"], "wrong password", address), 401,
                 "invalid_credentials")
    [failed] = admin.events(after=before)
    assert failed["type"] == "User.LoginFailed"
    assert failed["originator_id"] == user.user["id"]
    assert failed["data"]["address"] == address


def test_a_failed_sign_in_for_an_unknown_user_records_nothing(anon: Api, admin: Api) -> None:
    before = admin.quiet_head()
    response = login(anon, "nobody_" + uuid.uuid4().hex[:8], "whatever1")
    error = assert_error(response, 401, "invalid_credentials")
    assert admin.head() == before
    # Same answer as for a wrong password: which usernames exist is not revealed.
    assert error["message"] == "The username or password is wrong."


@pytest.mark.parametrize(("body", "field"), [
    ({"password": PASSWORD}, "username"),
    ({"username": "someone"}, "password"),
    ({"username": ["x"], "password": PASSWORD}, "username"),
    ({"username": "someone", "password": None}, "password"),
    ({"username": "x" * 257, "password": PASSWORD}, "username"),
])
def test_login_rejects_bad_fields(anon: Api, admin: Api, body: dict[str, Any],
                                  field: str) -> None:
    before = admin.quiet_head()
    response = anon.post("/api/auth/login/", json=body,
                         headers={"X-Forwarded-For": new_address()})
    assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before


def test_repeated_failures_for_one_username_answer_429(anon: Api, user: Api,
                                                       admin: Api) -> None:
    name = user.user["username"]
    for _ in range(5):  # LOGIN_MAX_FAILURES, each from another address
        assert_error(login(anon, name, "wrong password"), 401, "invalid_credentials")
    before = admin.quiet_head()
    for password in ("wrong password", PASSWORD):  # even the right one, for now
        response = login(anon, name, password)
        assert_error(response, 429, "rate_limited")
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 301
    assert admin.head() == before  # a refused attempt is not even checked
    # The account itself is fine: its existing token still works.
    assert user.get("/api/auth/me/").status_code == 200


def test_repeated_failures_from_one_address_answer_429(anon: Api, user: Api) -> None:
    address = new_address()
    for _ in range(5):
        response = login(anon, "ghost_" + uuid.uuid4().hex[:8], "wrong password", address)
        assert_error(response, 401, "invalid_credentials")
    limited = login(anon, user.user["username"], PASSWORD, address)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # From another address the same user signs in.
    assert login(anon, user.user["username"], PASSWORD).status_code == 200


def test_a_successful_sign_in_resets_the_count(anon: Api, user: Api) -> None:
    name = user.user["username"]
    for _ in range(4):
        assert login(anon, name, "wrong password").status_code == 401
    assert login(anon, name, PASSWORD).status_code == 200
    for _ in range(4):
        assert login(anon, name, "wrong password").status_code == 401
    assert login(anon, name, PASSWORD).status_code == 200


# -- races ---------------------------------------------------------------------------------


def register_raw(url: str, username: str) -> httpx.Response:
    return httpx.post(f"{url}/api/auth/register/", timeout=60, json={
        "username": username, "email": "race@example.com", "password": PASSWORD})


def test_racing_registrations_of_one_name_make_one_account(anon: Api, admin: Api) -> None:
    name = unique_name()
    spellings = [name, name.upper(), name.capitalize(), name] * 2
    before = admin.quiet_head()
    with ThreadPoolExecutor(len(spellings)) as pool:
        responses = list(pool.map(lambda n: register_raw(anon.url, n), spellings))
    assert sorted(r.status_code for r in responses) == [201] + [409] * (len(spellings) - 1)
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "username_taken", "username")
    registered = [e for e in admin.events(after=before, type="User.Registered")
                  if e["data"]["username"].casefold() == name.casefold()]
    assert len(registered) == 1


def test_racing_first_registrations_make_exactly_one_admin(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    names = [unique_name() for _ in range(6)]
    with ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda n: register_raw(fresh_server.url, n), names))
    assert [r.status_code for r in responses] == [201] * len(names)
    admins = [Api(fresh_server.url, r.json()["token"]).get("/api/auth/me/").json()["is_admin"]
              for r in responses]
    assert admins.count(True) == 1


# -- the sign-in limiter, in-process --------------------------------------------------------


def test_limiter_window_and_memory() -> None:
    clock = Clock()
    limiter = security.LoginLimiter(max_failures=3, window_seconds=60, clock=clock)
    # Checking accounts that never failed keeps nothing.
    for i in range(5000):
        assert limiter.retry_after(f"probe{i}", "10.0.0.1") == 0
    assert limiter.tracked == 0

    for _ in range(3):
        assert limiter.admit("alice", "10.0.0.1") == 0
    assert limiter.admit("bob", "10.0.0.1") == 61  # the address is used up
    assert 0 < limiter.retry_after("alice", "10.9.9.9") <= 61  # the account backs off
    clock.now += 60.5
    assert limiter.retry_after("alice", "10.0.0.1") == 0  # the window slid past
    assert limiter.tracked == 0

    # Thousands of one-off failures are swept out once their window has passed.
    for i in range(5000):
        limiter.admit(f"spray{i}", f"10.1.{i // 250}.{i % 250}")
    assert limiter.tracked >= 5000
    clock.now += 61
    for i in range(5000):
        limiter.admit(f"later{i}", f"10.2.{i // 250}.{i % 250}")
    assert limiter.tracked < 10000 + security.SWEEP_MIN * 2
    limiter.succeed("later1", "10.2.0.1")
    assert limiter.retry_after("later1", "10.2.0.1") == 0
