"""Admin API: the event history, server stats and the projections (rebuilds included)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.postgres import both_stores
from tests.server import Api, ServerProcess, assert_error, is_iso_utc

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

EVENT_KEYS = {"id", "position", "originator_id", "originator_version", "type", "timestamp",
              "data"}
PROJECTIONS = ["users", "sessions", "messages", "hashchain", "event_index", "search"]


def page(admin: Api, **params: Any) -> dict[str, Any]:
    response = admin.get("/api/admin/events/", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"events", "next_after"}
    return dict(body)


def test_events_shape_and_store_order(admin: Api, user: Api) -> None:
    body = page(admin, limit=50)
    events = body["events"]
    assert 0 < len(events) <= 50
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert body["next_after"] == positions[-1]
    for event in events:
        assert set(event) == EVENT_KEYS
        assert event["id"] == str(event["position"])
        assert isinstance(event["position"], int) and event["position"] >= 1
        assert str(uuid.UUID(event["originator_id"])) == event["originator_id"]
        assert isinstance(event["originator_version"], int) and event["originator_version"] >= 1
        assert isinstance(event["type"], str) and "." in event["type"]
        assert is_iso_utc(event["timestamp"])
        assert isinstance(event["data"], dict)
    # The very first events of the store: the admin's registration.
    first = page(admin, after=0, limit=3)["events"]
    assert [e["type"] for e in first] == ["User.Registered", "UsernameIndex.Claimed",
                                          "AdminSeat.Claimed"]
    assert first[0]["position"] == 1 and first[0]["originator_id"] == admin.user["id"]
    assert first[2]["data"]["user_id"] == first[0]["originator_id"]


def test_events_page_with_after_and_next_after(admin: Api, user: Api) -> None:
    session = user.new_session(title="paging", max_tokens=8)
    posted = user.post_message(session["id"], "Hello")
    user.wait_reply(session["id"], posted["reply"]["id"])
    everything = admin.events(originator_id=session["id"])
    assert len(everything) >= 6
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        body = page(admin, originator_id=session["id"], after=after, limit=2)
        paged += body["events"]
        assert len(body["events"]) <= 2
        if not body["events"]:
            assert body["next_after"] == after  # an empty page keeps the cursor
            break
        assert body["next_after"] == body["events"][-1]["position"] > after
        after = body["next_after"]
    assert paged == everything
    versions = [e["originator_version"] for e in everything]
    assert versions == list(range(1, len(everything) + 1))
    # `after` is exclusive.
    third = everything[2]["position"]
    assert page(admin, originator_id=session["id"], after=third, limit=1)["events"] == [
        everything[3]]
    beyond = page(admin, after=10**12)
    assert beyond == {"events": [], "next_after": 10**12}


def test_events_filter_by_type(admin: Api, user: Api) -> None:
    head = admin.quiet_head()
    session = user.new_session(title="filters")
    user.patch(f"/api/sessions/{session['id']}/", json={"title": "renamed"})
    started = page(admin, type="ChatSession.Started", after=head)["events"]
    assert [e["originator_id"] for e in started] == [session["id"]]
    assert started[0]["data"]["title"] == "filters"
    # The unqualified name matches too; exact names only, case-sensitive, no wildcards.
    assert page(admin, type="Started", after=head)["events"] == started
    assert page(admin, type="Renamed", after=head)["events"][0]["data"]["title"] == "renamed"
    assert page(admin, type="chatsession.started", after=head)["events"] == []
    assert page(admin, type="ChatSession_Started", after=head)["events"] == []
    assert page(admin, type="Start", after=head)["events"] == []
    claimed = page(admin, type="Claimed", limit=2)["events"]
    assert [e["type"] for e in claimed] == ["UsernameIndex.Claimed", "AdminSeat.Claimed"]
    registered = admin.events(type="User.Registered")
    assert user.user["id"] in [e["originator_id"] for e in registered]
    assert all(e["type"] == "User.Registered" for e in registered)


def test_events_filter_by_originator(admin: Api, user: Api) -> None:
    mine = admin.events(originator_id=user.user["id"])
    assert [e["type"] for e in mine] == ["User.Registered", "User.LoggedIn"]
    assert {e["originator_id"] for e in mine} == {user.user["id"]}
    assert admin.events(originator_id=str(uuid.uuid4())) == []
    combined = admin.events(originator_id=user.user["id"], type="LoggedIn")
    assert [e["type"] for e in combined] == ["User.LoggedIn"]


def test_events_never_show_password_hashes(admin: Api, anon: Api) -> None:
    password = "s3cret-" + uuid.uuid4().hex
    other = anon.register(password=password)
    response = admin.get("/api/admin/events/",
                         params={"originator_id": other.user["id"], "type": "Registered"})
    [registered] = response.json()["events"]
    assert registered["data"]["password_hash"] == "[redacted]"
    assert registered["data"]["username"] == other.user["username"]
    for after in (0, registered["position"] - 1):  # the store's start, and around this one
        text = admin.get("/api/admin/events/", params={"after": after, "limit": 1000}).text
        assert "[redacted]" in text
        assert "$argon2" not in text and password not in text
    assert other.token not in admin.get("/api/admin/events/",
                                        params={"originator_id": other.user["id"]}).text


@pytest.mark.parametrize(("params", "field"), [
    ({"after": "-1"}, "after"),
    ({"after": "x"}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"type": "User.Registered%"}, "type"),
    ({"type": "a b"}, "type"),
    ({"type": "'; DROP TABLE stored_events; --"}, "type"),
    ({"type": "*"}, "type"),
    ({"originator_id": "not-a-uuid"}, "originator_id"),
])
def test_events_reject_bad_filters(admin: Api, params: dict[str, str], field: str) -> None:
    assert_error(admin.get("/api/admin/events/", params=params), 400, "invalid_input", field)


def test_events_limit_bounds(admin: Api) -> None:
    assert len(page(admin, limit=1)["events"]) == 1
    assert len(page(admin, limit=1000)["events"]) <= 1000
    assert len(page(admin)["events"]) <= 100  # the default


def test_stats_shape_and_counts(admin: Api, anon: Api) -> None:
    def stats() -> dict[str, Any]:
        admin.quiet_head()
        response = admin.get("/api/admin/stats/")
        assert response.status_code == 200
        return dict(response.json())

    before = stats()
    assert set(before) == {"users", "sessions", "messages", "events", "queue_depth",
                           "generating", "model", "tokens_per_second_recent"}
    for key in ("users", "sessions", "messages", "events", "queue_depth"):
        assert isinstance(before[key], int) and not isinstance(before[key], bool)
    assert before["generating"] is False and before["queue_depth"] == 0
    assert before["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert isinstance(before["tokens_per_second_recent"], float | int)
    assert before["events"] == admin.head()

    someone = anon.register()
    session = someone.new_session(max_tokens=8)
    posted = someone.post_message(session["id"], "Hi")
    someone.wait_reply(session["id"], posted["reply"]["id"])
    during = stats()
    assert during["users"] == before["users"] + 1
    assert during["sessions"] == before["sessions"] + 1
    assert during["messages"] == before["messages"] + 2
    assert during["events"] > before["events"]
    assert during["tokens_per_second_recent"] > 0

    assert someone.delete(f"/api/sessions/{session['id']}/").status_code == 204
    after = stats()
    assert (after["users"], after["sessions"], after["messages"]) == (
        during["users"], before["sessions"], before["messages"])


def test_projection_list_shape(admin: Api) -> None:
    head = admin.quiet_head()
    deadline = time.monotonic() + 30
    while True:
        response = admin.get("/api/admin/projections/")
        assert response.status_code == 200
        listed = response.json()
        if all(p["lag"] == 0 for p in listed) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [p["name"] for p in listed] == PROJECTIONS
    for projection in listed:
        assert set(projection) == {"name", "position", "head", "lag"}
        assert projection["head"] == head == projection["position"]
        assert projection["lag"] == 0


def rebuilds_logged(server: ServerProcess, name: str) -> int:
    text = server.log_path.read_text(errors="replace")
    return text.count(f"projections {name} rebuilt from the log")


def wait_rebuilt(admin: Api, server: ServerProcess, name: str, seen: int) -> None:
    deadline = time.monotonic() + 60
    while rebuilds_logged(server, name) <= seen:
        assert time.monotonic() < deadline, f"projection {name} was not rebuilt"
        time.sleep(0.05)


@pytest.mark.parametrize("name", PROJECTIONS)
def test_rebuild_a_projection_changes_nothing_a_user_sees(
    admin: Api, user: Api, server: ServerProcess, name: str
) -> None:
    session = user.new_session(title="재구축 테스트", max_tokens=8, temperature=0)
    posted = user.post_message(session["id"], "안녕!")
    user.wait_reply(session["id"], posted["reply"]["id"])
    user.patch("/api/auth/me/", json={"display_name": "빌더"})
    head = admin.quiet_head()
    views = ("/api/sessions/", f"/api/sessions/{session['id']}/",
             f"/api/sessions/{session['id']}/messages/", "/api/auth/me/", "/api/auth/me/stats/")
    before = {path: user.get(path).json() for path in views}
    seen = rebuilds_logged(server, name)

    response = admin.post(f"/api/admin/projections/{name}/rebuild/")
    assert response.status_code == 202
    assert response.json() == {"name": name, "status": "rebuilding"}
    wait_rebuilt(admin, server, name, seen)

    listed = {p["name"]: p for p in admin.get("/api/admin/projections/").json()}
    assert listed[name] == {"name": name, "position": head, "head": head, "lag": 0}
    assert all(p["lag"] == 0 for p in listed.values())
    assert {path: user.get(path).json() for path in views} == before
    assert admin.head() == head  # a rebuild reads the log; it writes nothing to it


def test_rebuild_unknown_projection_is_404(admin: Api) -> None:
    before = admin.quiet_head()
    for name in ("nope", "Users", "users.x", "%2e%2e"):
        response = admin.post(f"/api/admin/projections/{name}/rebuild/")
        assert_error(response, 404, "not_found")
    assert admin.head() == before
