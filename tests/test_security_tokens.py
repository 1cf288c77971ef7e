"""The user's set of active tokens does not grow forever (issue 7, item 9): each sign-in
first expires the tokens older than TOKEN_TTL_DAYS, in the aggregate itself."""

from __future__ import annotations

from datetime import timedelta

from domain.application import ChatApplication


def test_sign_ins_expire_old_tokens_in_the_aggregate() -> None:
    chat = ChatApplication()  # the in-memory store: this is domain logic
    user = chat.register_user("token_keeper", "keeper@example.com", "해시")
    for i in range(50):
        chat.log_in(user.id, f"hash-{i}", "127.0.0.1", timedelta(days=30))
    kept = chat.get_user(user.id)
    assert len(kept.active_tokens) == 50  # all younger than the lifetime: all live

    # A lifetime already over: each sign-in leaves only itself (the rest expired, as
    # TokensExpired events, so a reload from the log agrees).
    chat.log_in(user.id, "hash-new", "127.0.0.1", timedelta(0))
    reloaded = chat.get_user(user.id)
    assert reloaded.active_tokens == {"hash-new"}
    assert set(reloaded.token_issued) == {"hash-new"}
    chat.log_out(user.id, "hash-new")
    assert chat.get_user(user.id).active_tokens == set()
