"""Read models are disposable (issue 7, item 7): a failing runner answers fast 503s and
shows in /healthz, a corrupt file is set aside and rebuilt at start, and the command line
rebuild repairs damaged read models."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from typing import Any

from tests.server import ROOT, Api, ServerProcess


def conversation(api: Api) -> tuple[str, list[dict[str, Any]]]:
    session = api.new_session(title="복구 시험", max_tokens=4, temperature=0)
    posted = api.post_message(session["id"], "한 단어로 대답해 주세요.")
    api.wait_reply(session["id"], posted["reply"]["id"])
    return session["id"], api.get(f"/api/sessions/{session['id']}/messages/").json()


def test_a_corrupt_read_model_file_is_rebuilt_at_start(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register("corrupt_owner", password="여덟 글자 이상 비밀번호")
    session_id, before = conversation(api)
    fresh_server.stop()
    path = fresh_server.data_dir / "readmodels.sqlite"
    for suffix in ("-wal", "-shm"):
        (fresh_server.data_dir / f"readmodels.sqlite{suffix}").unlink(missing_ok=True)
    with path.open("r+b") as f:
        f.write(b"\xff" * 4096)  # the header and first page: "file is not a database"

    fresh_server.start()
    assert api.get(f"/api/sessions/{session_id}/messages/").json() == before
    assert list(fresh_server.data_dir.glob("readmodels.sqlite.corrupt-*"))


def test_failing_projections_answer_fast_and_the_cli_repairs(
        fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register("broken_owner", password="여덟 글자 이상 비밀번호")
    api.new_session(title="남을 대화")
    with sqlite3.connect(fresh_server.data_dir / "readmodels.sqlite") as db:
        db.execute("DROP TABLE sessions")  # damage from outside: every update now fails

    for _ in range(2):
        refused = api.post("/api/sessions/", json={"title": "안 보일 대화"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] in ("read_models_failing", "read_models_behind")
    assert refused.json()["error"]["code"] == "read_models_failing"
    health = api.get("/healthz")
    assert health.status_code == 503 and health.json()["projections"] == "failing"

    fresh_server.stop()
    env = {**os.environ, "DATA_DIR": str(fresh_server.data_dir)}
    done = subprocess.run([sys.executable, "-m", "app.cli", "rebuild"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh_server.start()
    titles = {s["title"] for s in api.get("/api/sessions/").json()}
    assert {"남을 대화", "안 보일 대화"} <= titles  # the refused writes were saved all along
    assert api.get("/healthz").json()["projections"] == "ok"
