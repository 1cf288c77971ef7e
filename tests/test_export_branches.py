"""Export carries the branches: a chat with an edited message exports every version
(format version 2), imports with the same branches and current branch, and exports again
identically; malformed branches are refused naming the field, with nothing written; an
import event stored before the branches existed still loads."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.application import ChatApplication
from domain.sessions import ChatSession
from projections.runner import ProjectionRunner
from tests.server import Api, ServerProcess, assert_error
from tests.test_export_import import export, import_, same_content
from tests.test_pages import browser_client


def turn(api: Api, session_id: str, text: str) -> dict[str, Any]:
    posted = api.post_message(session_id, text)
    api.wait_reply(session_id, posted["reply"]["id"])
    return posted


def on_branch(api: Api, session_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"] if m["role"] == "user" else "…")
            for m in api.get(f"/api/sessions/{session_id}/messages/").json()]


@pytest.fixture(scope="module")
def edited(server: ServerProcess, admin: Api) -> tuple[Api, dict[str, Any]]:
    """A Korean chat of three turns whose second question was edited (and answered)."""
    user = Api(server.url).register()
    session = user.new_session(title="가지 내보내기", max_tokens=8, temperature=0)
    sid = session["id"]
    for text in ("첫 번째 질문", "두 번째 질문", "세 번째 질문"):
        turn(user, sid, text)
    second_id = user.get(f"/api/sessions/{sid}/messages/").json()[2]["id"]
    response = user.post(f"/api/sessions/{sid}/messages/{second_id}/edit/",
                         json={"content": "고친 두 번째 질문"})
    assert response.status_code == 202, response.text
    user.wait_reply(sid, response.json()["reply"]["id"])
    return user, session


def test_the_export_carries_every_version(edited: tuple[Api, dict[str, Any]]) -> None:
    user, session = edited
    document = export(user, session["id"])
    assert (document["format"], document["version"]) == ("localchat.session", 2)
    places = [(m["id"], m["role"], m["content"] if m["role"] == "user" else "…",
               m["parent"], m["version_of"], m["on_branch"]) for m in document["messages"]]
    assert places == [
        (0, "user", "첫 번째 질문", None, None, True),
        (1, "assistant", "…", 0, None, True),
        (2, "user", "두 번째 질문", 0, None, False),
        (3, "assistant", "…", 2, None, False),
        (4, "user", "세 번째 질문", 2, None, False),
        (5, "assistant", "…", 4, None, False),
        (6, "user", "고친 두 번째 질문", 0, 2, True),
        (7, "assistant", "…", 6, None, True),
    ]
    # Markdown is for reading: the current branch only.
    markdown = user.get(f"/api/sessions/{session['id']}/export/?format=markdown").text
    assert "고친 두 번째 질문" in markdown and "세 번째 질문" not in markdown
    assert "\n두 번째 질문" not in markdown


def test_export_import_export_keeps_the_branches(
    server: ServerProcess, edited: tuple[Api, dict[str, Any]], admin: Api
) -> None:
    user, session = edited
    first = export(user, session["id"])
    created = import_(user, first)
    copy_id = created["id"]
    second = export(user, copy_id)
    assert same_content(second) == same_content(first)
    events = admin.events(originator_id=copy_id)
    assert [e["type"] for e in events] == ["ChatSession.Started"] + [
        "ChatSession.MessageImported"] * 8

    # The copy's current branch is the original's; the versions route has the earlier one.
    assert on_branch(user, copy_id) == on_branch(user, session["id"]) == [
        ("user", "첫 번째 질문"), ("assistant", "…"), ("user", "고친 두 번째 질문"),
        ("assistant", "…")]
    newest = user.get(f"/api/sessions/{copy_id}/messages/").json()[2]["id"]
    versions = user.get(f"/api/sessions/{copy_id}/messages/{newest}/versions/").json()
    assert [(v["content"], v["current"]) for v in versions["versions"]] == [
        ("두 번째 질문", False), ("고친 두 번째 질문", True)]
    client, _csrf = browser_client(server, user)
    page = client.get(f"/chats/{copy_id}").text
    assert "고친 두 번째 질문" in page and "세 번째 질문" not in page and "2 / 2" in page
    old = client.get(f"/chats/{copy_id}/versions/{versions['versions'][0]['id']}").text
    assert "세 번째 질문" in old and "1 / 2" in old and "고친 두 번째 질문" not in old

    # The copy goes on from its current branch.
    turn(user, copy_id, "네 번째 질문")
    assert [text for role, text in on_branch(user, copy_id) if role == "user"] == [
        "첫 번째 질문", "고친 두 번째 질문", "네 번째 질문"]


def test_a_version_1_document_imports_as_before(edited: tuple[Api, dict[str, Any]]) -> None:
    user, session = edited
    document = export(user, session["id"])
    document["version"] = 1
    document["messages"] = [
        {key: value for key, value in m.items()
         if key not in ("id", "parent", "version_of", "on_branch")}
        for m in document["messages"] if m["on_branch"]]
    copy_id = import_(user, document)["id"]
    assert on_branch(user, copy_id) == on_branch(user, session["id"])
    again = export(user, copy_id)
    assert [(m["parent"], m["version_of"], m["on_branch"]) for m in again["messages"]] == [
        (None, None, True), (0, None, True), (0, None, True), (2, None, True)]
    # Branch fields belong to version 2 only.
    document["messages"][0]["on_branch"] = True
    refused = user.post("/api/sessions/import/", json=document)
    assert_error(refused, 400)
    assert refused.json()["error"]["message"].startswith("messages[0].on_branch:")


def broken(document: dict[str, Any], change: dict[int, dict[str, Any]]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    for index, fields in change.items():
        changed["messages"][index].update(fields)
    return changed


@pytest.mark.parametrize(("change", "field"), [
    ({2: {"parent": 99}}, "messages[2].parent"),  # a parent that does not exist
    ({0: {"parent": 2}}, "messages[0].parent"),  # 0 -> 2 -> 0: a cycle
    ({2: {"parent": 2}}, "messages[2].parent"),  # its own parent
    ({6: {"version_of": 1}}, "messages[6].version_of"),  # a version of an assistant message
    ({7: {"version_of": 6}}, "messages[7].version_of"),  # an assistant message with versions
    ({6: {"parent": None}}, "messages[6].parent"),  # not where the version it edits was
    ({4: {"on_branch": True}}, "messages[4].on_branch"),  # two current branches
    ({3: {"on_branch": True}}, "messages[3].on_branch"),  # a reply off its message's branch
    ({5: {"id": 0}}, "messages[5].id"),  # two messages with one id
    ({6: {"parent": "영"}}, "messages[6].parent"),
])
def test_malformed_branches_are_refused_naming_the_field(
    edited: tuple[Api, dict[str, Any]], admin: Api, change: dict[int, dict[str, Any]],
    field: str,
) -> None:
    user, session = edited
    document = export(user, session["id"])
    head = admin.quiet_head()
    refused = user.post("/api/sessions/import/",
                        content=json.dumps(broken(document, change), ensure_ascii=False),
                        headers={"Content-Type": "application/json"})
    assert_error(refused, 400)
    message = refused.json()["error"]["message"]
    assert message.startswith(field + ":"), message
    assert admin.head() == head, "a refused import recorded something"


def test_an_import_event_stored_before_branches_still_loads(tmp_path: Path) -> None:
    """Import events recorded before `branch` existed lack it: they are made here by
    removing the key from today's stored records (the only difference), then read by the
    real application and projections."""
    path = tmp_path / "events.sqlite"
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(path)})
    owner = UUID(int=7)
    turns = [("user", "예전 질문"), ("assistant", "예전 답"), ("user", "다음 질문")]
    messages: list[dict[str, Any]] = [
        {"role": role, "content": content, "timestamp": "2026-01-02T03:04:05.000000Z",
         "status": "complete", "token_count": None, "processing_time": None, "metadata": {}}
        for role, content in turns]
    session_id, _position = app.import_session(owner, "예전 가져오기", {}, messages, "localchat")
    app.close()
    log = sqlite3.connect(path)
    rows = log.execute("SELECT originator_version, state FROM stored_events"
                       " WHERE originator_id = ? AND originator_version > 1",
                       (session_id.hex,)).fetchall()
    assert len(rows) == 3
    for version, state in rows:
        fields = json.loads(state)
        assert "branch" in fields
        del fields["branch"]
        log.execute("UPDATE stored_events SET state = ? WHERE originator_id = ?"
                    " AND originator_version = ?",
                    (json.dumps(fields).encode(), session_id.hex, version))
    log.commit()
    log.close()

    again = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(path)})
    loaded: Any = again.repository.get(session_id)
    assert isinstance(loaded, ChatSession) and loaded.version == 4
    events = list(again.events.get(session_id))
    assert [type(e).__qualname__ for e in events] == ["ChatSession.Started"] + [
        "ChatSession.MessageImported"] * 3
    # Old records have no `branch` at all (the projection reads it as absent, not None).
    assert not any("branch" in vars(e) for e in events[1:])
    read = tmp_path / "read.sqlite"
    runner = ProjectionRunner(again, read)
    runner.catch_up()
    runner.stop()
    db = sqlite3.connect(read)
    rows = db.execute("SELECT id, role, content, parent_id, on_branch, in_reply_to"
                      " FROM messages WHERE session_id = ? ORDER BY position",
                      (str(session_id),)).fetchall()
    db.close()
    again.close()
    first, reply, last = rows
    assert [row[2] for row in rows] == ["예전 질문", "예전 답", "다음 질문"]
    assert (first[3], reply[5], last[3]) == (None, first[0], first[0])
    assert all(row[4] == 1 for row in rows)
    assert loaded.last_user_message() == UUID(last[0])
