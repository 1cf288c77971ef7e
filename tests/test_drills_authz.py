"""The authorization matrix, generated from the app's route table (issue 7 drills): every
route and method x {anonymous, revoked token, expired token, disabled user, other user,
non-admin}.

A route is public only if listed in PUBLIC; admin routes by their prefix; routes with a
`{session_id}` belong to the session's owner; any other route needs a signed-in user. A
new route is therefore checked as soon as it exists: if it is meant to be public it fails
here until it is listed."""

from __future__ import annotations

import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from starlette.routing import Route

from app.main import app
from app.security import token_hash
from domain.application import ChatApplication
from domain.users import User
from tests.server import Api, ServerProcess

PUBLIC = {
    "/healthz", "/api/auth/register/", "/api/auth/login/", "/login", "/register",
    "/vendor/{name:str}", "/metrics", "/", "/language",
}
ADMIN_PREFIXES = ("/api/admin/", "/admin")
API_PREFIXES = ("/api/", "/v1/", "/metrics", "/healthz")


def rule(path: str) -> str:
    if path in PUBLIC:
        return "public"
    if path.startswith(ADMIN_PREFIXES):
        return "admin"
    if "{session_id}" in path:
        return "owner"
    return "user"


def routes() -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, route.path))
    return found


def fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


def status_of(url: str, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] = {"json": {}} if path.startswith(API_PREFIXES) else {"data": {}}
    if method in ("GET", "DELETE"):
        body = {}
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as client, \
            client.stream(method, path, headers=headers, **body) as response:
        return response.status_code  # never read a stream that should not have opened


def denied(status: int, path: str) -> bool:
    if path.startswith(API_PREFIXES):
        return status in (401, 403, 404)
    return status in (303, 401, 403, 404)  # pages send the signed-out to /login


def expired_token(server: ServerProcess, user_id: str) -> str:
    """A token of a sign-in 31 days ago (TOKEN_TTL_DAYS is 30). The running server's clock
    cannot be moved, so the sign-in is written into its store beside it with that time, and
    the read models are awaited until they hold the token: refusing it is then expiry."""
    token = secrets.token_urlsafe(32)
    store = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(server.data_dir / "events.sqlite"),
                                 "SQLITE_LOCK_TIMEOUT": "10"})
    user: User = store.repository.get(UUID(user_id))
    user.trigger_event(User.LoggedIn, timestamp=datetime.now(UTC) - timedelta(days=31),
                       token_hash=token_hash(token), address="127.0.0.1")
    store.save(user)
    store.close()
    read_models = sqlite3.connect(server.data_dir / "readmodels.sqlite")
    try:
        deadline = time.monotonic() + 60  # the runner polls the log every second
        while read_models.execute("SELECT 1 FROM auth_tokens WHERE token_hash = ?",
                                  (token_hash(token),)).fetchone() is None:
            assert time.monotonic() < deadline, "the server never applied the old sign-in"
            time.sleep(0.2)
    finally:
        read_models.close()
    return token


def test_every_route_refuses_whom_it_must(server: ServerProcess, admin: Api) -> None:
    owner = Api(server.url).register()
    other = Api(server.url).register()
    revoked = Api(server.url).register()
    assert revoked.post("/api/auth/logout/").status_code == 204
    disabled = Api(server.url).register()
    switched = admin.post(f"/api/admin/users/{disabled.user['id']}/disable/")
    disabled_token = disabled.token if switched.status_code < 300 else None
    expired = expired_token(server, Api(server.url).register().user["id"])

    session = owner.new_session(title="권한 행렬", max_tokens=1)
    posted = owner.post_message(session["id"], "안녕")
    ids = {"session_id": session["id"], "message_id": posted["message"]["id"],
           "user_id": other.user["id"], "action": "disable", "name": "messages",
           "name:str": "htmx.min.js"}

    violations = []
    for method, template in routes():
        kind = rule(template)
        if kind == "public":
            continue
        path = fill(template, ids)
        callers: list[tuple[str, str | None]] = [("anonymous", None),
                                                  ("revoked", revoked.token),
                                                  ("expired", expired)]
        if disabled_token:
            callers.append(("disabled", disabled_token))
        if kind == "owner":
            callers.append(("other user", other.token))
        if kind == "admin":
            callers.append(("non-admin", owner.token))
        for who, token in callers:
            status = status_of(server.url, method, path, token)
            if not denied(status, path):
                violations.append(f"{method} {template} as {who}: {status}")
    assert not violations, "\n".join(violations)
    owner.post(f"/api/sessions/{session['id']}/cancel/")
