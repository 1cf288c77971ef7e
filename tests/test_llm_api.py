"""The LLM API (API.md "LLM"): the model list, and generation recorded like a chat reply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.inference.registry import ModelRegistry
from app.usecases import llm
from tests.server import ROOT, Api, ServerProcess, assert_error, sse_events

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
MODEL_FILE = ROOT / "models" / f"{MODEL_ID}.gguf"
PROMPT = "한국의 수도는 어디인가요? 한 문장으로 답하세요."


def completed_event(admin: Api, after: int, content: str) -> dict[str, Any]:
    found = [e for e in admin.events(type="ReplyCompleted", after=after)
             if e["data"]["content"] == content]
    assert len(found) == 1, found
    return found[0]


def started_config(admin: Api, session_id: str) -> dict[str, Any]:
    [started] = admin.events(type="ChatSession.Started", originator_id=session_id)
    return dict(started["data"]["config"])


def test_models_lists_the_loaded_default_model_from_its_file(user: Api) -> None:
    response = user.get("/api/llm/models/")
    assert response.status_code == 200, response.text
    models = response.json()
    [model] = [m for m in models if m["id"] == MODEL_ID]
    assert set(model) == {"id", "path", "size_bytes", "n_ctx", "loaded", "default"}
    assert model["loaded"] is True and model["default"] is True
    assert model["size_bytes"] == MODEL_FILE.stat().st_size
    assert Path(ROOT / model["path"]).resolve() == MODEL_FILE.resolve()
    assert model["n_ctx"] == 4096  # N_CTX, below the 8192 the file was trained for
    assert models[0]["id"] == MODEL_ID  # the default first
    assert sum(m["loaded"] for m in models) == 1


def test_models_needs_a_token(anon: Api) -> None:
    assert_error(anon.get("/api/llm/models/"), 401)


def test_generate_answers_and_is_recorded_as_a_hidden_chat_reply(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    response = user.post("/api/llm/generate/", json={
        "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "top_p": 0.9})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"text", "token_count", "processing_time", "model"}
    assert isinstance(body["text"], str) and body["text"]
    assert 1 <= body["token_count"] <= 12
    assert body["processing_time"] > 0 and body["model"] == MODEL_ID
    completed = completed_event(admin, before, body["text"])
    assert completed["data"]["token_count"] == body["token_count"]
    params = completed["data"]["model_params"]
    assert (params["max_tokens"], params["temperature"], params["top_p"]) == (12, 0.0, 0.9)
    session_id = completed["originator_id"]
    [posted] = admin.events(type="UserMessagePosted", originator_id=session_id)
    assert posted["data"]["content"] == PROMPT
    config = started_config(admin, session_id)
    assert config["origin"] == "api" and config["api"] == "generate"
    # Not one of the user's chats, but theirs to read by id.
    assert session_id not in [s["id"] for s in user.get("/api/sessions/").json()]
    messages = user.get(f"/api/sessions/{session_id}/messages/").json()
    assert [m["content"] for m in messages] == [PROMPT, body["text"]]
    assert user.get(f"/api/sessions/{session_id}/").status_code == 200


def test_generate_streams_tokens_then_done(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    with user.http.stream("POST", "/api/llm/generate/", json={
            "prompt": "서울에 대해 짧게 알려 주세요.", "max_tokens": 10, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(r))
    names = [e["event"] for e in events]
    assert names[-1] == "done" and set(names[:-1]) == {"token"}, names
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and ids[0] > before
    tokens = [e["data"] for e in events[:-1]]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    done = events[-1]["data"]
    assert "".join(t["text"] for t in tokens) == done["content"]
    assert done["finish_reason"] in ("stop", "length") and 1 <= done["token_count"] <= 10
    assert {t["reply_id"] for t in tokens} == {done["reply_id"]}
    assert completed_event(admin, before, done["content"])["data"]["reply_id"] == done["reply_id"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 7}, "prompt"),
    ({"prompt": "안녕", "temperature": 2.5}, "temperature"),
    ({"prompt": "안녕", "top_p": -0.1}, "top_p"),
    ({"prompt": "안녕", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "안녕", "max_tokens": 10**6}, "max_tokens"),
    ({"prompt": "안녕", "stream": "yes"}, "stream"),
])
def test_generate_refuses_bad_input_and_records_nothing(
        user: Api, admin: Api, body: dict[str, Any], field: str) -> None:
    before = admin.quiet_head()
    assert_error(user.post("/api/llm/generate/", json=body), 400, field=field)
    assert admin.head() == before


def test_generate_needs_a_token(anon: Api) -> None:
    assert_error(anon.post("/api/llm/generate/", json={"prompt": "안녕"}), 401)


def test_hidden_sessions_stay_out_of_the_list_but_chats_do_not(user: Api) -> None:
    chat = user.new_session(title="내 대화")
    assert user.post("/api/llm/generate/", json={"prompt": "하나", "max_tokens": 1}
                     ).status_code == 200
    assert [s["id"] for s in user.get("/api/sessions/").json()] == [chat["id"]]


def test_a_request_for_another_registry_model_switches_to_it_when_idle(tmp_path: Path) -> None:
    """A second model file (a link to the same weights under another name) in MODEL_PATHS."""
    extra = tmp_path / "more-models"
    extra.mkdir()
    (extra / "다른-모델.gguf").symlink_to(MODEL_FILE)
    process = ServerProcess(tmp_path / "data", MODEL_PATHS=str(extra)).start()
    try:
        user = Api(process.url).register()
        listed = {m["id"]: m for m in user.get("/api/llm/models/").json()}
        assert set(listed) == {MODEL_ID, "다른-모델"}
        assert listed["다른-모델"]["loaded"] is False and listed["다른-모델"]["default"] is False
        assert listed["다른-모델"]["n_ctx"] == 4096

        # Busy with the loaded model: a request for the other one waits, with Retry-After.
        chat = user.new_session(max_tokens=400)
        user.post_message(chat["id"], "아주 긴 이야기를 들려주세요.")
        busy = user.post("/v1/chat/completions", json={
            "model": "다른-모델", "messages": [{"role": "user", "content": "안녕"}]})
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["retry-after"]) > 0
        assert busy.json()["error"]["code"] == "model_busy"
        assert user.post(f"/api/sessions/{chat['id']}/cancel/").status_code == 202

        # Idle: it switches, answers with the other model, and the list says so.
        running = user.get(f"/api/sessions/{chat['id']}/messages/").json()[-1]
        user.wait_reply(chat["id"], running["id"])
        answer = user.post("/v1/chat/completions", json={
            "model": "다른-모델", "max_tokens": 2,
            "messages": [{"role": "user", "content": "안녕"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "다른-모델"
        listed = {m["id"]: m for m in user.get("/api/llm/models/").json()}
        assert listed["다른-모델"]["loaded"] and not listed[MODEL_ID]["loaded"]
        assert listed[MODEL_ID]["default"]

        # A chat of the first model switches back for its next reply.
        queued = user.post_message(chat["id"], "다시 짧게 답해 주세요.")
        reply = user.wait_reply(chat["id"], queued["reply"]["id"])
        assert reply["status"] == "complete" and reply["metadata"]["model_version"] == MODEL_ID
        assert_error(user.post("/api/sessions/", json={"model": "없는-모델"}), 400, field="model")
    finally:
        process.stop()


def test_a_client_leaving_a_stream_cancels_its_generation(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    with user.http.stream("POST", "/api/llm/generate/", json={
            "prompt": "아주 긴 소설을 써 주세요.", "max_tokens": 400, "stream": True}) as r:
        first = next(sse_events(r))
    assert first["event"] == "token"
    rid = first["data"]["reply_id"]
    [queued] = [e for e in admin.events(type="ReplyQueued", after=before)
                if e["data"]["reply_id"] == rid]
    reply = user.wait_reply(queued["originator_id"], rid)
    assert reply["status"] == "cancelled" and reply["content"].startswith(first["data"]["text"])


def test_the_registry_reads_gguf_headers_and_skips_what_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "깨진.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 7)  # cut short
    (tmp_path / "not-a-model.gguf").write_text("안녕하세요")
    (tmp_path / "링크.gguf").symlink_to(MODEL_FILE)
    registry = ModelRegistry(tmp_path, [], MODEL_FILE)
    models = registry.models()
    assert [m.id for m in models] == [MODEL_ID, "링크"]  # the default first
    model = models[0]
    assert registry.is_default(model) and not registry.is_default(models[1])
    assert model.n_ctx_train == 8192 and model.architecture == "llama"
    assert model.chat_template and "<|im_start|>" in model.chat_template
    assert model.size_bytes == MODEL_FILE.stat().st_size
    assert registry.find("없음") is None


@pytest.mark.parametrize("pieces", [
    ["하나, 둘", ", 셋", "!"],
    ["하나, 둘,", " 셋!"],
    ["하", "나", ", ", "둘", ",", " ", "셋", "!"],
])
def test_a_stop_string_split_across_pieces_is_held_back_and_cut(pieces: list[str]) -> None:
    cutter = llm.StopCutter((", 셋", "끝"))
    sent = "".join(cutter.push(piece) for piece in pieces)
    assert cutter.stopped and sent == "하나, 둘"
    assert cutter.rest() == ""
    assert cutter.cut("".join(pieces)) == "하나, 둘"


def test_text_that_only_looks_like_a_stop_string_start_is_released_at_the_end() -> None:
    cutter = llm.StopCutter(("###",))
    sent = cutter.push("제목 #") + cutter.push("#")
    assert sent == "제목 " and not cutter.stopped
    assert sent + cutter.rest() == "제목 ##"
