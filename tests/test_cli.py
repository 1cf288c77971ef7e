"""The replay and audit command line, on a data directory a real server wrote."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from tests.server import ROOT, Api, ServerProcess


def cli(data_dir: object, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "--data-dir", str(data_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_events_verify_and_rebuild(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register()
    session = api.new_session(title="감사 기록", max_tokens=8)
    posted = api.post(f"/api/sessions/{session['id']}/messages/", json={"content": "hi"})
    api.wait_reply(session["id"], posted.json()["reply"]["id"])
    fresh_server.stop()
    data = fresh_server.data_dir

    listed = cli(data, "events", "--type", "Started")
    assert listed.returncode == 0, listed.stderr
    started = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["data"]["title"] for e in started] == ["감사 기록"]

    verified = cli(data, "verify")
    assert verified.returncode == 0 and "match the log" in verified.stdout

    # A read model that drifted from the log is caught, and a rebuild repairs it.
    db = sqlite3.connect(data / "readmodels.sqlite")
    db.execute("UPDATE sessions SET title = 'tampered'")
    db.commit()
    db.close()
    drifted = cli(data, "verify")
    assert drifted.returncode == 1 and "sessions" in drifted.stdout and "DIFFERS" in drifted.stdout
    assert cli(data, "rebuild").returncode == 0
    assert cli(data, "verify").returncode == 0
