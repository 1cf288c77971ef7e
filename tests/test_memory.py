"""Long memory: older turns put back into a prompt that had to drop them (real tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from app.config import Settings
from app.inference.engine import Turn
from app.inference.llama_engine import LlamaEngine
from app.inference.memory import HEADER, prepare_with_memory


@pytest.fixture(scope="module")
def engine() -> LlamaEngine:
    return LlamaEngine(Settings().model_path, n_ctx=512, n_threads=2, n_gpu_layers=0)


def long_history(turns: int) -> tuple[list[Turn], list[str]]:
    history, ids = [], []
    for n in range(turns):
        history.append(Turn("user", f"질문 {n}: " + "바다 이야기 " * 40))
        ids.append(f"u{n}")
        history.append(Turn("assistant", f"답 {n}: " + "등대 " * 40))
        ids.append(f"a{n}")
    history.append(Turn("user", "처음에 말한 등대지기의 이름이 뭐였죠?"))
    ids.append("last")
    return history, ids


def test_short_conversations_recall_nothing(engine: LlamaEngine) -> None:
    asked: list[Sequence[str]] = []
    result = prepare_with_memory(engine.prepare, "Be brief.", [Turn("user", "안녕")], ["m1"],
                                 64, lambda kept: asked.append(kept) or [], reserve_tokens=128)
    assert result.recalled_ids == [] and asked == []  # nothing was dropped, nothing asked
    assert result.prompt.dropped_turns == 0


def test_dropped_turns_come_back_when_relevant_and_within_budget(engine: LlamaEngine) -> None:
    history, ids = long_history(8)
    plain = engine.prepare("Be brief.", history, 64)
    assert plain.dropped_turns > 0
    kept_seen: list[list[str]] = []

    def recall(kept: Sequence[str]) -> list[tuple[str, str, str]]:
        kept_seen.append(list(kept))
        return [("u0", "user", "등대지기의 이름은 김민준입니다."),
                ("a0", "assistant", "알겠습니다.")]

    result = prepare_with_memory(engine.prepare, "Be brief.", history, ids, 64, recall,
                                 reserve_tokens=128)
    newest = engine.prepare("Be brief.", history, 64 + 128)
    assert kept_seen == [ids[newest.dropped_turns:]]
    assert result.recalled_ids == ["u0", "a0"]
    text = engine._llm.detokenize(result.prompt.tokens).decode()
    assert HEADER in text and "김민준" in text
    # The newest turns that fit beside the reserve are all there, with the full budget.
    assert result.prompt.dropped_turns <= newest.dropped_turns
    assert result.prompt.max_tokens == plain.max_tokens == 64


def test_recalled_turns_that_do_not_fit_are_left_out(engine: LlamaEngine) -> None:
    history, ids = long_history(8)
    huge = "아주 긴 기억 " * 400  # cut to the per-message bound, still too big for 512 tokens

    result = prepare_with_memory(engine.prepare, "Be brief.", history, ids, 64,
                                 lambda kept: [("u0", "user", huge)], reserve_tokens=128)
    assert result.recalled_ids == []
    assert result.prompt == engine.prepare("Be brief.", history, 64)


def test_the_page_lists_the_messages_a_reply_recalled() -> None:
    from app.pages.render import fragment

    reply = {"id": "r1", "role": "assistant", "content": "나비예요.", "status": "complete",
             "token_count": 3, "processing_time": 0.2,
             "metadata": {"model_params": {"recalled_message_ids": ["m7", "m9"]}}}
    html = fragment("chat/_message.html", m=reply, session_id="s1")
    assert 'href="#msg-m7"' in html and 'href="#msg-m9"' in html
    assert "Recalled 2 earlier messages" in html
    plain = fragment("chat/_message.html", m={**reply, "metadata": {}}, session_id="s1")
    assert "Recalled" not in plain and "#msg-m7" not in plain
