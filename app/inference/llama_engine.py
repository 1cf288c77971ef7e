"""The llama.cpp engine: a local GGUF model through llama-cpp-python."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import llama_cpp

from app.inference.engine import (
    Finished,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Token,
    Turn,
)
from app.inference.prompting import ChatPrompter


class LlamaEngine:
    """Owns one `llama_cpp.Llama`; not thread-safe, so the actor calls it from one thread."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, n_gpu_layers: int) -> None:
        self._llm = llama_cpp.Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads,
            n_gpu_layers=n_gpu_layers, verbose=False,
        )
        model = self._llm._model
        self._prompter = ChatPrompter(model, self._llm.n_ctx())
        self._vocab = model.vocab
        self.info = ModelInfo(
            id=model_path.stem,
            path=str(model_path),
            size_bytes=model_path.stat().st_size,
            n_ctx=self._llm.n_ctx(),
            prompt_template=self._prompter.template_id,
        )

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        return self._prompter.fit(system_prompt, history, max_tokens)

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
