"""The llama.cpp engine: a local GGUF model through llama-cpp-python."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.inference.engine import (
    ContextTooLong,
    Finished,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Token,
    Turn,
)

# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MIN_REPLY_TOKENS = 16


class LlamaEngine:
    """Owns one `llama_cpp.Llama`; not thread-safe, so the actor calls it from one thread."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int) -> None:
        self._llm = llama_cpp.Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads,
            n_gpu_layers=n_gpu_layers, verbose=False,
        )
        template = self._llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        model = self._llm._model
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(self._llm.token_eos()),
            bos_token=model.token_get_text(self._llm.token_bos()),
            add_generation_prompt=True,
        )
        self._vocab = model.vocab
        digest = hashlib.sha256(template.encode()).hexdigest()[:12]
        source = "gguf" if "tokenizer.chat_template" in self._llm.metadata else "chatml"
        self.info = ModelInfo(
            id=model_path.stem,
            path=str(model_path),
            size_bytes=model_path.stat().st_size,
            n_ctx=self._llm.n_ctx(),
            prompt_template=f"{source}:{digest}",
        )

    def _tokens(self, turns: list[Turn]) -> list[int]:
        messages: Any = [{"role": t.role, "content": t.content} for t in turns]
        rendered = self._formatter(messages=messages)
        # The template writes any BOS itself, so the tokenizer must not add another.
        return self._llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=False, special=True)

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        system = [Turn("system", system_prompt)] if system_prompt else []
        turns, dropped = list(history), 0
        while True:
            tokens = self._tokens(system + turns)
            if len(tokens) + max_tokens <= self.info.n_ctx or len(turns) <= 1:
                break
            # Drop the oldest turn, and any assistant turns left leading the conversation.
            turns, dropped = turns[1:], dropped + 1
            while len(turns) > 1 and turns[0].role != "user":
                turns, dropped = turns[1:], dropped + 1
        budget = min(max_tokens, self.info.n_ctx - len(tokens))
        if budget < min(MIN_REPLY_TOKENS, max_tokens):
            raise ContextTooLong(
                f"The message needs {len(tokens)} tokens, but the model's context holds "
                f"{self.info.n_ctx} including the reply. Shorten the message or the system prompt."
            )
        return PreparedPrompt(tokens=tokens, dropped_turns=dropped, max_tokens=budget)

    def stream(self, prompt: PreparedPrompt, params: SamplingParams) -> Iterator[Token | Finished]:
        # Byte-level tokens can split a Hangul syllable; the decoder holds the partial bytes.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        for token in self._llm.generate(
            prompt.tokens, temp=params.temperature, top_p=params.top_p, repeat_penalty=1.1,
            reset=True,
        ):
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                yield Finished("stop")  # bytes of a character left incomplete are dropped
                return
            piece = self._llm.detokenize([token], prev_tokens=prompt.tokens + generated)
            generated.append(token)
            yield Token(decoder.decode(piece))
            if len(generated) >= params.max_tokens:
                yield Finished("length")
                return
