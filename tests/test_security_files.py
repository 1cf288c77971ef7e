"""Item 9: DATA_DIR is private to the server's user, and users never see the model's file
path or internal error text."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.server import Api, ServerProcess

HIDDEN_MODEL = "/srv/비밀/models/hidden-model.gguf"


def test_data_files_are_private_and_the_model_path_stays_in_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "old.txt").write_text("예전 파일")
    (data / "old.txt").chmod(0o644)
    server = ServerProcess(data, MODEL_PATH=HIDDEN_MODEL).start()
    try:
        api = Api(server.url).register("private_owner", password="여덟 글자 이상 비밀번호")
        session = api.new_session(title="경로 숨기기")
        refused = api.post(f"/api/sessions/{session['id']}/messages/",
                           json={"content": "안녕하세요"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "model_not_loaded"
        assert "hidden-model" not in refused.text and "/srv" not in refused.text
        health = api.get("/healthz").text
        assert "hidden-model" not in health
    finally:
        server.stop()
    assert HIDDEN_MODEL in server.log_path.read_text()  # the operator still learns it
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("events.sqlite", "readmodels.sqlite", "secret_key", "old.txt"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))
