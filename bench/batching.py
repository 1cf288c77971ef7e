"""The batched engine against llama-cpp-python's own generate loop, in one run.

Reference: `Llama.generate` (the high-level API, one sequence, prefix reuse of the previous
prompt only), the same model, context, threads, prompts and temperature 0. Measured: the
batched engine (`app/inference/batched_engine.py`) with one stream, four concurrent streams,
and four chats whose ten turns interleave. Also counts how many temperature-0 replies come
out identical to the single-sequence reference (batched kernels may round differently).

    .venv/bin/python bench/batching.py [--max-tokens 128] [--flash-attn auto|on|off]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp

from app.config import Settings
from app.inference.batched_engine import BatchedEngine
from app.inference.engine import Turn
from app.inference.jobs import Event, GenerationRequest, Job, Text
from app.inference.prompting import ChatPrompter
from app.inference.sampling import GenerationParams

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    "Explain what a lighthouse does in three sentences.",
    "List five fruits and one fact about each.",
    "안녕하세요! 자기소개를 해 주세요.",
    "Write a short poem about the sea.",
    "What is the difference between a list and a tuple in Python?",
]
CHAT_TURNS = [
    "Tell me about {}.", "Why is that?", "Give an example.", "What else should I know?",
    "Summarise that in one sentence.", "And in Korean? 한국어로 말해 주세요.",
    "Name a related topic.", "Tell me more about it.", "What is a common mistake?",
    "Thank you! One last tip?",
]
CHAT_TOPICS = ["the moon", "bread baking", "the Korean alphabet", "bicycles"]


class Run:
    """One reply: when it started, its first token, its end and its text."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.ended: float | None = None
        self.tokens = 0
        self.evaluated: int | None = None  # prompt tokens the engine ran (after KV reuse)
        self.pieces: list[str] = []

    def token(self, text: str, count: int = 1) -> None:
        if self.first is None and count:
            self.first = time.perf_counter()
        self.tokens += count
        self.pieces.append(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft(self) -> float:
        return (self.first or self.started) - self.started

    @property
    def seconds(self) -> float:
        return (self.ended or self.started) - self.started


# -- the reference: llama-cpp-python's high-level generate ---------------------------------

class Reference:
    def __init__(self, settings: Settings, flash_attn: bool) -> None:
        self.llm = llama_cpp.Llama(
            model_path=str(settings.model_path), n_ctx=settings.n_ctx,
            n_threads=settings.n_threads, n_threads_batch=settings.n_threads,
            flash_attn=flash_attn, verbose=False)
        self.prompter = ChatPrompter(self.llm._model, self.llm.n_ctx())
        self.vocab = self.llm._model.vocab

    def reply(self, tokens: list[int], max_tokens: int) -> Run:
        run, generated = Run(), []
        for token in self.llm.generate(tokens, temp=0.0, repeat_penalty=1.1, reset=True):
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            generated.append(token)
            run.token("")
            if len(generated) >= max_tokens:
                break
        run.ended = time.perf_counter()
        run.pieces = [self.llm.detokenize(generated).decode("utf-8", errors="replace")]
        return run


# -- the batched engine ----------------------------------------------------------------------

def submit(engine: BatchedEngine, tokens: list[int], max_tokens: int,
           key: str | None = None) -> tuple[Job, Run]:
    run = Run()

    def sink(event: Event) -> None:
        if isinstance(event, Text):
            run.token(event.text, event.tokens)

    job = engine.submit(GenerationRequest(tokens, GenerationParams(0.0, 0.95, max_tokens),
                                          key=key), sink)
    return job, run


def wait(pairs: list[tuple[Job, Run]]) -> list[Run]:
    for job, run in pairs:
        job.done.wait()
        run.ended = run.ended or time.perf_counter()
        run.evaluated = job.stats.evaluated_tokens
    return [run for _, run in pairs]


Reply = Callable[[str, list[Turn]], Run]


def chats(replies: dict[str, Reply]) -> dict[str, list[list[Run]]]:
    """Four chats, ten turns each, taking turns (chat 1 turn 1, chat 2 turn 1, ...), for
    each way of replying; the ways alternate turn by turn, so load changes hit both."""
    histories: dict[str, list[list[Turn]]] = {name: [[] for _ in CHAT_TOPICS]
                                              for name in replies}
    runs: dict[str, list[list[Run]]] = {name: [[] for _ in CHAT_TOPICS] for name in replies}
    for turn in CHAT_TURNS:
        for name, reply in replies.items():
            for n, topic in enumerate(CHAT_TOPICS):
                history: list[Turn] = histories[name][n]
                history.append(Turn("user", turn.format(topic)))
                run = reply(f"chat-{n}", history)
                history.append(Turn("assistant", run.text))
                runs[name][n].append(run)
    return runs


def rate(runs: list[Run]) -> float:
    return sum(r.tokens for r in runs) / sum(r.seconds for r in runs)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat-tokens", type=int, default=48)
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()
    settings = Settings()
    flash = {"auto": None, "on": True, "off": False}[args.flash_attn]
    print(f"model {settings.model_path.name}, n_ctx {settings.n_ctx}, threads "
          f"{settings.n_threads}, max_tokens {args.max_tokens}, flash attention {args.flash_attn}"
          f", load average {os.getloadavg()[0]:.1f}")

    reference = Reference(settings, flash_attn=flash is not False)  # auto: on, on a CPU

    def fresh(tag: str) -> list[list[int]]:
        """PROMPTS as new conversations: only the opening of the system prompt is shared
        with anything read before (as for a new user of a server)."""
        return [reference.prompter.fit(f"{SYSTEM} This is conversation {tag}{n}.",
                                       [Turn("user", p)], args.max_tokens).tokens
                for n, p in enumerate(PROMPTS)]

    prompts = fresh("s")
    with tempfile.TemporaryDirectory() as cache:
        engine = BatchedEngine(settings.model_path, n_ctx=settings.n_ctx, n_parallel=4,
                               n_threads=settings.n_threads, n_batch=settings.n_batch,
                               flash_attn=flash, cache_dir=Path(cache))
        try:
            reference.reply(prompts[0], 8)  # warm up both
            wait([submit(engine, prompts[0], 8)])
            raw, single = [], []
            for p in prompts:  # alternating, so load changes on a shared machine hit both
                raw.append(reference.reply(p, args.max_tokens))
                single.append(wait([submit(engine, p, args.max_tokens)])[0])
            # The same prompts decoded together, for the text comparison only (their slots
            # already hold these prompts, so their timing would flatter the engine).
            together = wait([submit(engine, p, args.max_tokens) for p in prompts[:4]])
            rounds = []  # (aggregate tok/s, worst first token), three times
            for n in range(3):
                began = time.perf_counter()
                runs = wait([submit(engine, p, args.max_tokens) for p in fresh(f"c{n}-")[:4]])
                rounds.append((sum(r.tokens for r in runs) / (time.perf_counter() - began),
                               max(r.ttft for r in runs)))
            aggregate = statistics.median(a for a, _ in rounds)
            worst = statistics.median(w for _, w in rounds)
            both = chats({
                "raw": lambda key, history: reference.reply(reference.prompter.fit(
                    SYSTEM, history, args.chat_tokens).tokens, args.chat_tokens),
                "engine": lambda key, history: wait([submit(
                    engine, engine.prepare(SYSTEM, history, args.chat_tokens).tokens,
                    args.chat_tokens, key=key)])[0],
            })
            raw_chats, engine_chats = both["raw"], both["engine"]
            stats = engine.stats
        finally:
            engine.close()
            reference.llm.close()

    print()
    print(f"{'':34}{'tok/s':>8}{'first token':>14}")
    print(f"{'raw generate, 1 stream':34}{rate(raw):8.1f}"
          f"{ms(statistics.median(r.ttft for r in raw)):>14} (median)")
    print(f"{'engine, 1 stream':34}{rate(single):8.1f}"
          f"{ms(statistics.median(r.ttft for r in single)):>14} (median)")
    print(f"{'engine, 4 concurrent (aggregate)':34}{aggregate:8.1f}"
          f"{ms(worst):>14} (worst; medians of 3 rounds)")
    print()
    for name, chat_runs in (("raw generate", raw_chats), ("engine", engine_chats)):
        t1 = statistics.median(c[0].ttft for c in chat_runs)
        t10 = statistics.median(c[-1].ttft for c in chat_runs)
        evaluated = [statistics.mean(c[t].evaluated or 0 for c in chat_runs) for t in (0, -1)]
        read = f"; prompt tokens evaluated {evaluated[0]:.0f} -> {evaluated[1]:.0f}" \
            if name == "engine" else ""
        print(f"4 interleaved chats (median), {name:13} first token turn 1 {ms(t1)}, "
              f"turn 10 {ms(t10)}"
              f"  ({t10 / t1:.2f}x){read}")
    print()
    print(f"engine 1 stream / raw: {rate(single) / rate(raw):.2f}x; "
          f"4 concurrent / engine 1 stream: {aggregate / rate(single):.2f}x; "
          f"worst first token 4 concurrent / 1 stream: "
          f"{worst / statistics.median(r.ttft for r in single):.2f}x")
    same_single = sum(a.text == b.text for a, b in zip(raw, single, strict=True))
    same_together = sum(a.text == b.text for a, b in zip(single, together, strict=False))
    # Later turns build on earlier replies, so compare each chat's first turn only.
    same_chats = sum(x[0].text == y[0].text for x, y in zip(raw_chats, engine_chats, strict=True))
    print(f"temperature-0 texts identical: engine 1 stream vs raw {same_single}/{len(raw)}, "
          f"4 concurrent vs engine 1 stream {same_together}/{len(together)}, "
          f"chats' first turns engine vs raw {same_chats}/{len(CHAT_TOPICS)}")
    print(f"engine: {stats.steps} steps, occupancy {stats.occupancy(4):.2f}, "
          f"KV resident {stats.kv_resident}, restored {stats.kv_restored}, "
          f"misses {stats.kv_misses}, evictions {stats.kv_evictions}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
