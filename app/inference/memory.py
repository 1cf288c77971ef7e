"""Long memory: when a conversation no longer fits the context, the newest turns stay and
the older turns most relevant to the new message are put back, within the token budget.

The recalled turns travel in the system prompt, marked as earlier parts of this
conversation, so the chat template's turn order (user, assistant, user, ...) stays intact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.inference.engine import ContextTooLong, PreparedPrompt, Turn

RECALL_LIMIT = 4
RECALLED_CHARS = 1500  # per recalled message: a long one is cut, not skipped
RESERVE_SHARE = 4  # recalled turns may take up to 1/4 of the context from the oldest kept
HEADER = "Earlier in this conversation (recalled because it relates to the new message):"

Prepare = Callable[[str, list[Turn], int], PreparedPrompt]
# (ids of the turns kept in the prompt) -> [(message_id, role, content)], most relevant first.
Recall = Callable[[Sequence[str]], list[tuple[str, str, str]]]


@dataclass(frozen=True)
class RememberingPrompt:
    prompt: PreparedPrompt
    recalled_ids: list[str]


def memory_block(recalled: Sequence[tuple[str, str, str]]) -> str:
    lines = [HEADER]
    for _id, role, content in recalled:
        text = content if len(content) <= RECALLED_CHARS else content[:RECALLED_CHARS] + "…"
        lines.append(f"[{role}] {text}")
    return "\n".join(lines)


def prepare_with_memory(
    prepare: Prepare, system_prompt: str, history: list[Turn], history_ids: Sequence[str],
    max_tokens: int, recall: Recall | None, reserve_tokens: int, history_cut: bool = False,
) -> RememberingPrompt:
    """The prompt for a reply, with recalled turns when older ones had to go.

    `history_ids` are the ids of `history`'s turns; `history_cut` says that turns older
    than `history` exist (the reader stopped early). When turns must go anyway, the newest
    turns are fitted as if the reply needed `reserve_tokens` more, and recalled turns may
    use that room, never the reply's own budget."""
    plain = prepare(system_prompt, history, max_tokens)
    if recall is None or not (plain.dropped_turns or history_cut):
        return RememberingPrompt(plain, [])
    try:
        newest = prepare(system_prompt, history, max_tokens + reserve_tokens)
    except ContextTooLong:  # the new message alone fills the room: nothing to add
        return RememberingPrompt(plain, [])
    kept = list(history_ids[newest.dropped_turns:])
    candidates = recall(kept)[:RECALL_LIMIT]
    for count in range(len(candidates), 0, -1):
        chosen = candidates[:count]
        system = f"{system_prompt}\n\n{memory_block(chosen)}".strip()
        try:
            prompt = prepare(system, history, max_tokens)
        except ContextTooLong:
            continue
        if (prompt.dropped_turns <= newest.dropped_turns
                and prompt.max_tokens >= plain.max_tokens):
            return RememberingPrompt(prompt, [message_id for message_id, _, _ in chosen])
    return RememberingPrompt(plain, [])
