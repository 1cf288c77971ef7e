"""The fuzz drill, quick version (issue 7 drills): hypothesis over every JSON API route.

For each generated request: no 5xx, every error in the API.md shape, and a rejected
request appends no event (the only events that may land meanwhile are the replies of
earlier accepted posts being written, and the audit record of a failed sign-in). The full
drill (drills/fuzz.py) runs the same checks for 10,000 cases."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from app.main import app
from tests.server import Api, ServerProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
# Streams never end and logging out would end the fuzzing user: left to other tests.
SKIPPED = {"/api/sessions/{session_id}/stream/", "/api/auth/logout/"}
GENERATING = {"/api/llm/generate/", "/v1/chat/completions"}
BACKGROUND = {"ReplyStarted", "TokensGenerated", "ReplyCompleted", "ReplyFailed",
              "ReplyCancelled", "ReplyInterrupted"}
FIELDS = ["username", "email", "password", "title", "content", "system_prompt",
          "temperature", "top_p", "max_tokens", "model", "display_name", "messages",
          "prompt", "stream", "current_password", "new_password", "q", "limit"]

ALPHABET = "가나다라마바사아자차카타파하한국어 abcXYZ019_.-@<>\"'&;/\\\x00\u200b\U0001f600"
TEXT = st.text(alphabet=st.sampled_from(ALPHABET), max_size=40)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                   st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS) | TEXT, inner,
                                                  max_size=4)), max_leaves=8)
BODY = st.one_of(st.dictionaries(st.sampled_from(FIELDS), SCALAR | JSON, max_size=6), JSON)


def api_routes() -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if (isinstance(route, Route) and route.path.startswith(("/api/", "/v1/"))
                and route.path not in SKIPPED):
            found += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


def error_shaped(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if response.request.url.path.startswith("/v1/"):  # the OpenAI error shape there
        error = body.get("error") if isinstance(body, dict) else None
        return isinstance(error, dict) and isinstance(error.get("message"), str)
    error = body.get("error") if isinstance(body, dict) else None
    return (isinstance(error, dict) and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str))


def check(server: ServerProcess, admin: Api, user: Api, session_id: str,
          data: st.DataObject) -> None:
    method, template = data.draw(st.sampled_from(api_routes()), label="route")
    sessions = [session_id, "없는-세션", "0" * 32, "00000000-0000-0000-0000-000000000000"]
    ids = {"session_id": data.draw(st.sampled_from(sessions)),
           "message_id": data.draw(st.sampled_from(["x", "0" * 32])),
           "user_id": data.draw(st.sampled_from(["사용자", "0" * 32])),
           "action": data.draw(st.sampled_from(["disable", "explode", "권한"])),
           "name": data.draw(st.sampled_from(["없음", "x" * 300]))}
    path = template
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    token = admin.token if template.startswith("/api/admin/") else user.token
    kind = data.draw(st.sampled_from(["json", "raw", "form", "none"]), label="body kind")
    kwargs: dict[str, Any] = {"params": data.draw(st.dictionaries(
        st.sampled_from(["q", "limit", "after", "type", "last_event_id", "before"]), TEXT,
        max_size=3), label="query")}
    if kind == "json":
        body = data.draw(BODY, label="body")
        if isinstance(body, dict) and template in GENERATING:  # keep accepted ones short
            body.update(max_tokens=2, max_completion_tokens=2, stream=False)
        kwargs["content"] = json.dumps(body, ensure_ascii=False)
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif kind == "raw":
        kwargs["content"] = data.draw(st.binary(max_size=200), label="raw body")
        kwargs["headers"] = {"Content-Type": data.draw(st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded"]))}
    elif kind == "form":
        kwargs["data"] = data.draw(st.dictionaries(st.sampled_from(FIELDS), TEXT, max_size=4))
    kwargs.setdefault("headers", {})["Authorization"] = f"Bearer {token}"

    before = admin.head()
    response = httpx.request(method, server.url + path, timeout=120, **kwargs)
    assert response.status_code < 500, (method, path, kwargs, response.text)
    if response.status_code >= 400:
        assert error_shaped(response), (method, path, response.status_code, response.text)
        appended = [e for e in admin.events(after=before)
                    if e["type"].split(".")[-1] not in BACKGROUND
                    and not (e["type"].endswith("LoginFailed") and response.status_code == 401)]
        assert appended == [], (method, path, response.status_code, appended)


def test_fuzz_every_api_route(server: ServerProcess, admin: Api, user: Api) -> None:
    session = user.new_session(title="퍼즈", max_tokens=1)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        check(server, admin, user, session["id"], data)

    run()
