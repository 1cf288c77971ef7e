"""The small interface between the inference actor and whatever runs the model.

An engine turns a conversation into a prompt that fits its context window, then streams
the reply token by token. The actor knows nothing else about the model, so a batching or
remote engine can take this one's place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class ContextTooLong(Exception):
    """Even with every older turn dropped, the prompt leaves no room for a reply."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    path: str
    size_bytes: int
    n_ctx: int
    prompt_template: str


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    max_tokens: int


@dataclass(frozen=True)
class PreparedPrompt:
    tokens: list[int]  # a remote engine's are placeholders, as many as it estimates
    dropped_turns: int
    max_tokens: int  # the reply budget that fits beside the prompt
    # The fitted conversation (system turn first), for an engine that takes messages, not
    # tokens (a remote server); in-process engines leave it empty.
    turns: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class Token:
    text: str  # may be "" while a multi-byte character is still incomplete


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (end of turn) or "length" (token budget used up)


class Engine(Protocol):
    info: ModelInfo

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        """Render the chat template, dropping the oldest turns until the reply fits."""
        ...

    def stream(self, prompt: PreparedPrompt, params: SamplingParams) -> Iterator[Token | Finished]:
        """Generate; the caller may stop iterating at any token to cancel."""
        ...
