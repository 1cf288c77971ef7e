"""Per-reply sampling: llama.cpp's own sampler chain, stop strings, incremental text.

The chain mirrors what `Llama.generate` builds for `LlamaEngine` (repeat penalty 1.1 over the
last 64 tokens, then greedy at temperature 0, otherwise top-k 40, typical 1, top-p, min-p
0.05, temperature, seeded draw), so both engines write the same kind of reply.
"""

from __future__ import annotations

import codecs
import ctypes
import random
from dataclasses import dataclass

import llama_cpp
from llama_cpp import _internals as internals

PENALTY_LAST_N = 64
REPEAT_PENALTY = 1.1
TOP_K = 40
MIN_P = 0.05


@dataclass(frozen=True)
class GenerationParams:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None = None  # None: a fresh random seed per reply
    stop: tuple[str, ...] = ()  # the reply ends before the first of these (not included)


def make_sampler(params: GenerationParams, n_vocab: int) -> internals.LlamaSampler:
    sampler = internals.LlamaSampler()
    sampler.add_penalties(n_vocab, PENALTY_LAST_N, REPEAT_PENALTY, 0.0, 0.0)
    if params.temperature <= 0.0:
        sampler.add_greedy()
        return sampler
    seed = params.seed if params.seed is not None else random.getrandbits(32)
    sampler.add_top_k(TOP_K)
    sampler.add_typical(1.0, 1)
    sampler.add_top_p(params.top_p, 1)
    sampler.add_min_p(MIN_P, 1)
    sampler.add_temp(params.temperature)
    sampler.add_dist(seed & 0xFFFFFFFF)
    return sampler


def token_bytes(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """The bytes of one token as text (special tokens render as nothing)."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n  # too small: llama.cpp says how much it needs


class TextStream:
    """Token bytes in, printable text out, holding back what a stop string may still claim.

    Byte-level tokens can split a Hangul syllable: the UTF-8 decoder keeps partial bytes
    until the character is whole. Text that could be the start of a stop string waits
    until it either completes one (the reply ends before it) or cannot.
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Returns the text now safe to emit; sets `stopped` when a stop string appeared."""
        self._held += self._decoder.decode(data)
        if not self._stop:
            text, self._held = self._held, ""
            return text
        cut = min((i for i in (self._held.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text, self._held = self._held[:cut], ""
            return text
        keep = max((_overlap(self._held, s) for s in self._stop), default=0)
        text, self._held = self._held[:len(self._held) - keep], self._held[len(self._held) - keep:]
        return text

    def flush(self) -> str:
        """What is held back, at the end of a reply that no stop string ended."""
        text, self._held = self._held + self._decoder.decode(b"", final=False), ""
        return text


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that is a beginning of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
