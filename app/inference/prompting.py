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
        """Render the template, dropping the oldest turns until the reply fits.

        The conversation may only start at a user turn, and fewer turns never take more
        tokens, so the first start that fits is found by bisection: a handful of renders,
        however long the history."""
        system = [Turn("system", system_prompt)] if system_prompt else []
        starts = [0] + [i for i, turn in enumerate(history) if i > 0 and turn.role == "user"]
        rendered: dict[int, list[int]] = {}

        def fits(index: int) -> bool:
            tokens = rendered[index] = self.tokens(system + history[starts[index]:])
            return len(tokens) + max_tokens <= self.n_ctx

        chosen = 0
        if not fits(0):
            # The newest start stays even when it does not fit; the budget check decides.
            low, high, chosen = 1, len(starts) - 1, len(starts) - 1
            while low <= high:
                middle = (low + high) // 2
                if fits(middle):
                    chosen, high = middle, middle - 1
                else:
                    low = middle + 1
        tokens = rendered.get(chosen) or self.tokens(system + history[starts[chosen]:])
        budget = min(max_tokens, self.n_ctx - len(tokens))
        if budget < min(MIN_REPLY_TOKENS, max_tokens):
            raise ContextTooLong(
                f"The message needs {len(tokens)} tokens, but the model's context holds "
                f"{self.n_ctx} including the reply. Shorten the message or the system prompt."
            )
        return PreparedPrompt(tokens=tokens, dropped_turns=starts[chosen], max_tokens=budget)
