"""A model file missing at start (or one that failed to load) is loaded by the next reply
once it is there: no restart. While it is missing, replies fail with today's clear error.

A real server (uvicorn, the real model, SQLite) whose MODEL_PATH points into an empty
models directory; the file is copied in while it runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODEL
from tests.server import Api, ServerProcess, assert_error


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "모델"
    models.mkdir()
    return models


@pytest.fixture
def server(tmp_path: Path, models_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", MODEL_PATH=str(models_dir / MODEL.name),
                            MODELS_DIR=str(models_dir), N_CTX="1024", N_PARALLEL="1")
    yield process.start()
    process.stop()


def refused(api: Api, session_id: str, code: str) -> str:
    """A post refused with 503 `code`, never naming a path; its message."""
    response = api.post(f"/api/sessions/{session_id}/messages/", json={"content": "아직인가요?"})
    error = assert_error(response, 503, code)
    assert int(response.headers["Retry-After"]) >= 1
    assert ".gguf" not in response.text and "/" not in error["message"]
    return str(error["message"])


def test_a_model_file_put_back_is_loaded_by_the_next_reply(
        server: ServerProcess, models_dir: Path) -> None:
    api = Api(server.url).register("model_back_admin")
    chat = api.new_session(title="모델이 돌아왔어요", max_tokens=8)
    assert chat["config"]["model"] == MODEL.stem
    missing = refused(api, chat["id"], "model_not_loaded")
    assert "missing" in missing  # today's words: "The model file is missing; ..."
    assert api.get("/healthz").json()["model_loaded"] is False

    # A file that cannot be loaded (the header without the weights): the next reply tries
    # it once and says so; the one after does not try the same file again.
    target = models_dir / MODEL.name
    with MODEL.open("rb") as source, target.open("wb") as broken:
        broken.write(source.read(MODEL.stat().st_size // 2))
    refused(api, chat["id"], "model_load_failed")
    refused(api, chat["id"], "model_not_loaded")
    assert api.get("/healthz").json()["model_loaded"] is False

    shutil.copyfile(MODEL, target)  # the operator puts the real file back
    posted = api.post_message(chat["id"], "제주도를 한 문장으로 소개해 주세요.")
    reply = api.wait_reply(chat["id"], posted["reply"]["id"], timeout=120)
    assert reply["status"] == "complete", reply
    assert reply["content"]
    health = api.get("/healthz").json()
    assert health["model_loaded"] is True and health["status"] == "ok"
    assert api.get("/api/admin/stats/").json()["model"] == MODEL.stem
    server_log = server.log_path.read_text()
    assert "loading SmolLM2-135M-Instruct.Q4_1 failed" in server_log  # the path goes here


def test_the_model_asked_for_by_name_is_loaded_when_none_is(
        server: ServerProcess, models_dir: Path) -> None:
    """A /v1 request naming a model that appears in the models directory while no model is
    loaded: that one is loaded for it."""
    api = Api(server.url).register("model_named_admin")
    body = {"model": "다른-모델", "max_tokens": 4,
            "messages": [{"role": "user", "content": "안녕하세요"}]}
    assert api.post("/v1/chat/completions", json=body).status_code == 404
    shutil.copyfile(MODEL, models_dir / "다른-모델.gguf")
    answered = api.post("/v1/chat/completions", json=body, timeout=120)
    assert answered.status_code == 200, answered.text
    assert answered.json()["model"] == "다른-모델"
    assert api.get("/healthz").json()["model_loaded"] is True
