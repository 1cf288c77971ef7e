"""Turning a conversation into prompt tokens that fit a context window.

Shared by every engine, so a reply is prompted the same way whichever engine writes it:
the GGUF's own chat template (ChatML when the file has none), oldest turns dropped first.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.inference.engine import ContextTooLong, PreparedPrompt, Turn

# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MIN_REPLY_TOKENS = 16


class Vocabulary(Protocol):
    """What prompting needs from a loaded model (`llama_cpp._internals.LlamaModel`)."""

    def metadata(self) -> dict[str, str]: ...
    def token_bos(self) -> int: ...
    def token_eos(self) -> int: ...
    def token_get_text(self, token: int) -> str: ...
    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]: ...


class ChatPrompter:
    def __init__(self, model: Vocabulary, n_ctx: int) -> None:
        self._model = model
        self.n_ctx = n_ctx
        metadata = model.metadata()
        template = metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(model.token_eos()),
            bos_token=model.token_get_text(model.token_bos()),
            add_generation_prompt=True,
        )
        source = "gguf" if "tokenizer.chat_template" in metadata else "chatml"
        self.template_id = f"{source}:{hashlib.sha256(template.encode()).hexdigest()[:12]}"

    def tokens(self, turns: list[Turn]) -> list[int]:
        messages: Any = [{"role": t.role, "content": t.content} for t in turns]
        rendered = self._formatter(messages=messages)
        # The template writes any BOS itself, so the tokenizer must not add another.
        return self._model.tokenize(rendered.prompt.encode("utf-8"), add_bos=False, special=True)

    def fit(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        """Render the template, dropping the oldest turns until the reply fits."""
        system = [Turn("system", system_prompt)] if system_prompt else []
        turns, dropped = list(history), 0
        while True:
            tokens = self.tokens(system + turns)
            if len(tokens) + max_tokens <= self.n_ctx or len(turns) <= 1:
                break
            # Drop the oldest turn, and any assistant turns left leading the conversation.
            turns, dropped = turns[1:], dropped + 1
            while len(turns) > 1 and turns[0].role != "user":
                turns, dropped = turns[1:], dropped + 1
        budget = min(max_tokens, self.n_ctx - len(tokens))
        if budget < min(MIN_REPLY_TOKENS, max_tokens):
            raise ContextTooLong(
                f"The message needs {len(tokens)} tokens, but the model's context holds "
                f"{self.n_ctx} including the reply. Shorten the message or the system prompt."
            )
        return PreparedPrompt(tokens=tokens, dropped_turns=dropped, max_tokens=budget)
