"""The OpenAI-compatible API, driven by the official `openai` client against the real server."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.server import Api, ServerProcess

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
SYSTEM = "당신은 간결하게 답하는 비서입니다."
EARLIER = [
    {"role": "user", "content": "안녕하세요, 저는 민수입니다."},
    {"role": "assistant", "content": "안녕하세요, 민수 님! 무엇을 도와드릴까요?"},
]
QUESTION = "제 이름이 뭐라고 했죠?"


def client_for(server: ServerProcess, token: str | None) -> OpenAI:
    # No retries: a 503 must surface here, not be retried behind the test's back.
    return OpenAI(base_url=f"{server.url}/v1", api_key=token or "none", max_retries=0,
                  timeout=120)


@pytest.fixture
def client(server: ServerProcess, user: Api) -> OpenAI:
    return client_for(server, user.token)


def session_of(admin: Api, after: int, reply_content: str) -> str:
    found = [e for e in admin.events(type="ReplyCompleted", after=after)
             if e["data"]["content"] == reply_content]
    assert len(found) == 1, found
    return str(found[0]["originator_id"])


def test_models_list_the_loaded_model(client: OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL_ID in ids
    assert all(m.object == "model" and m.owned_by == "localchat" for m in models.data)
    retrieved = client.models.retrieve(MODEL_ID)
    assert retrieved.id == MODEL_ID
    # The context a LocalChat using this server as its ENGINE_URL may fill (vLLM's field).
    assert (retrieved.model_extra or {}).get("max_model_len", 0) >= 512
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("없는-모델")
    assert error_of(missing)["code"] == "model_not_found"


def test_completion_answers_and_records_the_conversation(
        client: OpenAI, admin: Api) -> None:
    before = admin.quiet_head()
    completion = client.chat.completions.create(
        model=MODEL_ID, temperature=0, top_p=0.9, max_tokens=16, seed=7, stop=["\n\n\n"],
        messages=[{"role": "system", "content": SYSTEM}, *EARLIER,  # type: ignore[list-item]
                  {"role": "user", "content": QUESTION}],
    )
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL_ID
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    text = choice.message.content
    assert isinstance(text, str) and text
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and 1 <= usage.completion_tokens <= 16
    assert usage.prompt_tokens > 20  # the system prompt and both earlier turns are in it
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Recorded as a chat reply: earlier turns as given, the question posted, the reply.
    session_id = session_of(admin, before, text)
    events = admin.events(originator_id=session_id)
    started = events[0]
    assert started["type"] == "ChatSession.Started"
    config = started["data"]["config"]
    assert config["origin"] == "api" and config["api"] == "chat.completions"
    assert config["system_prompt"] == SYSTEM
    assert (config["temperature"], config["top_p"], config["max_tokens"]) == (0.0, 0.9, 16)
    assert config["seed"] == 7 and config["stop"] == ["\n\n\n"]
    imported = [e["data"] for e in events if e["type"] == "ChatSession.MessageImported"]
    assert [(m["role"], m["content"]) for m in imported] == [
        (t["role"], t["content"]) for t in EARLIER]
    posted = [e["data"]["content"] for e in events if e["type"] == "ChatSession.UserMessagePosted"]
    assert posted == [QUESTION]
    completed = [e["data"] for e in events if e["type"] == "ChatSession.ReplyCompleted"]
    assert completed[0]["token_count"] == usage.completion_tokens


def test_streaming_chunks_add_up_to_the_recorded_reply(client: OpenAI, admin: Api) -> None:
    before = admin.quiet_head()
    stream = client.chat.completions.create(
        model=MODEL_ID, max_tokens=12, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "부산을 한 문장으로 소개해 주세요."}],
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None
    assert 1 <= usage.completion_tokens <= 12
    assert session_of(admin, before, text)


def test_a_stop_string_ends_the_reply_before_it(client: OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "1부터 10까지 숫자를 쉼표로 나열하세요."}]
    free = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0,
                                          max_tokens=24, seed=1)
    reference = free.choices[0].message.content or ""
    words = reference.split()
    assert len(words) >= 3, reference
    stop = words[2]  # a piece from the middle of what the model says at temperature 0
    cut = reference[:reference.find(stop)]
    for stream in (False, True):
        if stream:
            chunks = list(client.chat.completions.create(
                model=MODEL_ID, messages=messages, temperature=0, max_tokens=24, seed=1,
                stop=stop, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            stopped = client.chat.completions.create(
                model=MODEL_ID, messages=messages, temperature=0, max_tokens=24, seed=1,
                stop=[stop])
            text = stopped.choices[0].message.content or ""
            finish = stopped.choices[0].finish_reason
        assert stop not in text, (stop, text)
        assert text == cut, (stream, reference, text)
        assert finish == "stop"


def test_max_tokens_ends_with_length(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ID, max_tokens=2,
        messages=[{"role": "user", "content": "긴 이야기를 해 주세요."}])
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


def error_of(raised: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = raised.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def test_errors_come_in_openai_shape_and_record_nothing(
        server: ServerProcess, client: OpenAI, admin: Api) -> None:
    before = admin.quiet_head()
    hello: Any = [{"role": "user", "content": "안녕"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-없는-모델", messages=hello)
    assert error_of(missing)["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model=MODEL_ID, messages=hello, temperature=5)
    error = error_of(hot)
    assert (error["type"], error["param"]) == ("invalid_request_error", "temperature")
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=MODEL_ID, messages=[])
    assert error_of(empty)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as last:
        client.chat.completions.create(model=MODEL_ID, messages=[
            {"role": "user", "content": "질문"}, {"role": "assistant", "content": "답"}])
    assert error_of(last)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as stops:
        client.chat.completions.create(model=MODEL_ID, messages=hello,
                                       stop=["가", "나", "다", "라", "마"])
    assert error_of(stops)["param"] == "stop"
    with pytest.raises(openai.AuthenticationError) as denied:
        client_for(server, "not-a-token").chat.completions.create(model=MODEL_ID,
                                                                  messages=hello)
    assert error_of(denied)["type"] == "authentication_error"
    with pytest.raises(openai.NotFoundError) as route:
        client.get("/nothing-here", cast_to=object)
    assert error_of(route)["type"] == "invalid_request_error"
    assert admin.head() == before


def test_hidden_completion_sessions_stay_out_of_the_session_list(
        client: OpenAI, user: Api) -> None:
    client.chat.completions.create(model=MODEL_ID, max_tokens=1,
                                   messages=[{"role": "user", "content": "하나"}])
    assert user.get("/api/sessions/").json() == []


def test_closing_a_stream_cancels_the_generation(client: OpenAI, admin: Api, user: Api) -> None:
    before = admin.quiet_head()
    stream = client.chat.completions.create(
        model=MODEL_ID, max_tokens=400, stream=True,
        messages=[{"role": "user", "content": "아주 긴 소설을 써 주세요."}])
    chunks = iter(stream)
    while not next(chunks).choices[0].delta.content:  # the role chunk, then the first text
        pass
    stream.close()
    [queued] = admin.events(type="ReplyQueued", after=before)
    reply = user.wait_reply(queued["originator_id"], queued["data"]["reply_id"])
    assert reply["status"] == "cancelled"
