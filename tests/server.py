"""A real server in a subprocess: uvicorn, the real model, SQLite files in a temp dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
UVICORN = Path(sys.executable).parent / "uvicorn"
# Debian's chromium, driven by Playwright (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, event_store: str = "", **env: str) -> None:
        self.data_dir = data_dir
        # Empty: the SQLite file in data_dir; else a postgresql:// URL (EVENT_STORE).
        self.event_store = event_store
        # Every test user registers from 127.0.0.1: hundreds a minute, far past the
        # per-address sign-up throttle meant for strangers (tests of it set their own).
        self.env = {"REGISTER_MAX_PER_ADDRESS": "100000", **env}
        if event_store:
            self.env["EVENT_STORE"] = event_store
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        env = {**os.environ, "DATA_DIR": str(self.data_dir), **self.env}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(UVICORN), "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        """kill -9: no shutdown code runs, as in a crash or power loss."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


class Api:
    """A small client for one server; `as_user` gives one signed in as a fresh user."""

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)
        self.url = url
        self.token = token
        self.user: dict[str, Any] = {}

    def register(self, username: str | None = None, password: str = "correct horse") -> Api:
        name = username or f"u{uuid.uuid4().hex[:10]}"
        response = self.http.post("/api/auth/register/", json={
            "username": name, "email": f"{name}@example.com", "password": password})
        assert response.status_code == 201, response.text
        body = response.json()
        signed_in = Api(self.url, body["token"])
        signed_in.user = body
        return signed_in

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.put(path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.patch(path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)

    def new_session(self, **fields: Any) -> dict[str, Any]:
        response = self.post("/api/sessions/", json=fields)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def wait_reply(self, session_id: str, reply_id: str, timeout: float = 60) -> dict[str, Any]:
        """Poll until the reply leaves queued/streaming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.get(f"/api/sessions/{session_id}/messages/").json():
                if message["id"] == reply_id and message["status"] not in ("queued", "streaming"):
                    return dict(message)
            time.sleep(0.1)
        raise AssertionError(f"reply {reply_id} did not finish")

    def head(self) -> int:
        """The event store head, as an admin sees it (for 'appended nothing' checks)."""
        return int(self.get("/api/admin/stats/").json()["events"])

    def quiet_head(self, timeout: float = 120) -> int:
        """The head once no reply is queued or generating (admin only).

        Earlier tests may leave a reply generating in the background; its tokens would
        move the head. Once the actor is idle, only requests append events.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first = self.get("/api/admin/stats/").json()
            if not first["queue_depth"] and not first["generating"]:
                again = self.get("/api/admin/stats/").json()
                if (not again["queue_depth"] and not again["generating"]
                        and again["events"] == first["events"]):
                    return int(again["events"])
            time.sleep(0.05)
        raise AssertionError("the inference actor did not become idle")

    def events(self, **params: Any) -> list[dict[str, Any]]:
        """Admin: every event matching the filters (type, originator_id, after), all pages."""
        found: list[dict[str, Any]] = []
        after = int(params.pop("after", 0))
        while True:
            response = self.get("/api/admin/events/",
                                params={**params, "after": after, "limit": 1000})
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["events"]
            if len(page["events"]) < 1000:
                return found
            after = page["next_after"]

    def post_message(self, session_id: str, content: str) -> dict[str, Any]:
        response = self.post(f"/api/sessions/{session_id}/messages/", json={"content": content})
        assert response.status_code == 202, response.text
        return dict(response.json())


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream response into {id, event, data} dicts (comments skipped)."""
    import json

    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            event[field] = value[1:] if value.startswith(" ") else value


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def is_iso_utc(value: Any) -> bool:
    """An ISO-8601 UTC time string as the API writes them: `2026-01-02T03:04:05.123456Z`."""
    if not isinstance(value, str) or not ISO_UTC.match(value):
        return False
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.utcoffset() == timedelta(0)


def assert_error(response: httpx.Response, status: int, code: str | None = None,
                 field: str | None = None) -> dict[str, Any]:
    """The API's one error shape, exactly: {"error": {"code", "message"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"])
    assert isinstance(error["message"], str) and error["message"].strip()
    if code is not None:
        assert error["code"] == code, body
    if field is not None:
        assert field in error["message"], f"the message should name {field!r}: {body}"
    return dict(error)
