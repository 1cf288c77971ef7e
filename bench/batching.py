"""The batched engine against llama-cpp-python's own generate loop, in one run.

Reference: `Llama.generate` (the high-level API, one sequence, prefix reuse of the previous
prompt only), the same model, context, threads, prompts and temperature 0. Measured: the
batched engine (`app/inference/batched_engine.py`) with one stream, four concurrent streams,
and four chats whose ten turns interleave. Also counts how many temperature-0 replies come
out identical to the single-sequence reference (batched kernels may round differently).

Where the time goes is printed too: the engine's step trace of the four concurrent prompts
(when each was admitted, which steps read its prompt, when its first token came), prompt
tokens evaluated per chat turn, and the largest gap between a running reply's tokens while
a long prompt is read beside it.

    .venv/bin/python bench/batching.py [--max-tokens 128] [--flash-attn auto|on|off]
                                       [--chat-rounds 2]
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
from app.inference.batched_engine import BatchedEngine, StepRecord
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
        self.times: list[float] = []  # when each generated token arrived

    def token(self, text: str, count: int = 1) -> None:
        now = time.perf_counter()
        if self.first is None and count:
            self.first = now
        if count:
            self.times.append(now)
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


def concurrent(engine: BatchedEngine, prompts: list[list[int]], max_tokens: int
               ) -> tuple[list[Run], list[Job], list[StepRecord]]:
    """The prompts submitted together; their runs, jobs and the engine's steps meanwhile."""
    engine.trace = []
    try:
        pairs = [submit(engine, p, max_tokens) for p in prompts]
        runs = wait(pairs)
        return runs, [job for job, _ in pairs], engine.trace
    finally:
        engine.trace = None


def timeline(jobs: list[Job], steps: list[StepRecord]) -> list[str]:
    """Per job: when it got a slot, the steps that read its prompt, its first token (ms
    after the first submit; a step is shown as start-end and the tokens read in it)."""
    zero = min(job.submitted for job in jobs)
    lines = []
    for job in jobs:
        admitted = next((s.began for s in steps if job.id in s.admitted), None)
        reads = [(s, p) for s in steps for p in s.parts if p.job == job.id and p.prefill]
        first = job.stats.first_token_seconds
        chunks = ", ".join(f"{(s.began - zero) * 1000:.0f}-{(s.ended - zero) * 1000:.0f} "
                           f"({p.tokens} of {sum(q.tokens for q in s.parts)} in the step)"
                           for s, p in reads)
        lines.append(
            f"  job {job.id}: submitted {(job.submitted - zero) * 1000:4.0f}, admitted "
            f"{(admitted - zero) * 1000 if admitted else float('nan'):4.0f}, prompt read "
            f"{chunks or '-'}; first token "
            f"{(job.submitted - zero + (first or 0)) * 1000:4.0f} ms")
    decode_steps = [s for s in steps if any(not p.prefill for p in s.parts)]
    first_all = max(job.submitted + (job.stats.first_token_seconds or 0) for job in jobs)
    early = [s for s in decode_steps if s.ended <= first_all]
    lines.append(f"  steps until the last first token: "
                 f"{sum(1 for s in steps if s.ended <= first_all + 1e-9)}, of which with "
                 f"generated tokens: {len(early)}")
    return lines


def long_prompt_gaps(engine: BatchedEngine, short: list[int], long: list[int],
                     max_tokens: int) -> tuple[float, float, float, int]:
    """A reply decodes; after its 8th token a long prompt arrives. Returns the reply's
    median token gap before, its largest gap while the long prompt is read, the long
    prompt's first-token time and the number of steps that read it."""
    engine.trace = []
    try:
        arrived = threading.Event()
        run = Run()

        def sink(event: Event) -> None:
            if isinstance(event, Text):
                run.token(event.text, event.tokens)
                if len(run.times) == 8:
                    arrived.set()

        job = engine.submit(GenerationRequest(short, GenerationParams(0.0, 0.95, max_tokens)),
                            sink)
        arrived.wait()
        long_job, long_run = submit(engine, long, 4)
        wait([(long_job, long_run)])
        job.cancel()  # the reply only had to run beside the long prompt
        job.done.wait()
        steps = list(engine.trace)
    finally:
        engine.trace = None
    start = long_run.started
    end = long_run.first or start
    gaps_before = [b - a for a, b in zip(run.times, run.times[1:], strict=False) if b <= start]
    during = [b - a for a, b in zip(run.times, run.times[1:], strict=False) if b > start
              and a < end]
    reads = sum(1 for s in steps for p in s.parts if p.job == long_job.id and p.prefill)
    return (statistics.median(gaps_before), max(during, default=0.0), long_run.ttft, reads)


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
    parser.add_argument("--chat-rounds", type=int, default=2,
                        help="times the engine's four chats are played (medians over all)")
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
            # Warm up both on a prompt outside the measured ones (warmed up on prompts[0],
            # its single runs read 1 token and flattered both single-stream medians).
            warm = fresh("w")[0]
            reference.reply(warm, 8)
            wait([submit(engine, warm, 8)])
            raw, single = [], []
            for p in prompts:  # alternating, so load changes on a shared machine hit both
                raw.append(reference.reply(p, args.max_tokens))
                single.append(wait([submit(engine, p, args.max_tokens)])[0])
            # The same prompts decoded together, for the text comparison only (their slots
            # already hold these prompts, so their timing would flatter the engine).
            together = wait([submit(engine, p, args.max_tokens) for p in prompts[:4]])
            rounds = []  # (aggregate tok/s, worst first token, timeline), three times
            for n in range(3):
                began = time.perf_counter()
                runs, jobs, steps = concurrent(engine, fresh(f"c{n}-")[:4], args.max_tokens)
                rounds.append((sum(r.tokens for r in runs) / (time.perf_counter() - began),
                               max(r.ttft for r in runs), timeline(jobs, steps),
                               sum(r.evaluated or 0 for r in runs)))
            aggregate = statistics.median(a for a, *_ in rounds)
            worst = statistics.median(w for _, w, *_ in rounds)
            middle = sorted(rounds, key=lambda r: r[1])[1]
            single_read = statistics.median(r.evaluated or 0 for r in single)
            long = reference.prompter.fit(SYSTEM, [Turn("user", "Summarise this text. " + " ".join(
                ["The sea is wide and blue, and the waves roll in from far away."] * 60))],
                16).tokens
            gaps = long_prompt_gaps(engine, prompts[1], long, 2000)
            # The engine's chats in a phase of their own (turn 1 and turn 10 close in time,
            # not minutes apart behind the reference's slow turns), played `chat_rounds`
            # times; each round forgets the last one's chats and opens with its own system
            # prompt, so its turn 1 reads as much as the first round's did.
            engine_chats: list[list[Run]] = []

            def engine_reply(system: str) -> Reply:
                return lambda key, history: wait([submit(
                    engine, engine.prepare(system, history, args.chat_tokens).tokens,
                    args.chat_tokens, key=key)])[0]

            for r in range(args.chat_rounds):
                system = SYSTEM if r == 0 else f"{SYSTEM} Round {r + 1}."
                engine_chats += chats({"engine": engine_reply(system)})["engine"]
                for n in range(len(CHAT_TOPICS)):
                    engine.forget(f"chat-{n}")
            raw_chats = chats({"raw": lambda key, history: reference.reply(
                reference.prompter.fit(SYSTEM, history, args.chat_tokens).tokens,
                args.chat_tokens)})["raw"]
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
    print(f"4 concurrent, the median round (ms after the first submit); prompt tokens read: "
          f"{middle[3]} for the four, {single_read:.0f} for one single prompt (median), "
          f"{middle[3] / max(single_read, 1):.2f}x")
    print("\n".join(middle[2]))
    serial = sum(r.ttft for r in single[:4])
    print("the same four prompts one at a time (engine, 1 stream): first tokens "
          + ", ".join(f"{r.ttft * 1000:.0f}" for r in single[:4])
          + " ms, prompt tokens " + ", ".join(f"{r.evaluated}" for r in single[:4])
          + f"; worst of 4 concurrent / their sum: {worst / serial:.2f}x")
    print(f"a reply beside a {len(long)}-token prompt: token gap {ms(gaps[0])} (median before),"
          f" {ms(gaps[1])} (largest while the prompt was read in {gaps[3]} steps);"
          f" the long prompt's first token {ms(gaps[2])}")
    print()
    for name, chat_runs in (("raw generate", raw_chats), ("engine", engine_chats)):
        t1 = statistics.median(c[0].ttft for c in chat_runs)
        t10 = statistics.median(c[-1].ttft for c in chat_runs)
        print(f"{len(chat_runs)} chats (median), {name:13} first token turn 1 {ms(t1)}, "
              f"turn 10 {ms(t10)}  ({t10 / t1:.2f}x)")
    print("engine per turn, first token median ms / prompt tokens evaluated (each chat):")
    for t in range(len(CHAT_TURNS)):
        print(f"  turn {t + 1:2}: {statistics.median(c[t].ttft for c in engine_chats) * 1000:6.0f}"
              f" ms / " + " ".join(f"{c[t].evaluated or 0:3}" for c in engine_chats))
    print()
    print(f"engine 1 stream / raw: {rate(single) / rate(raw):.2f}x; "
          f"4 concurrent / engine 1 stream: {aggregate / rate(single):.2f}x; "
          f"worst first token 4 concurrent / 1 stream: "
          f"{worst / statistics.median(r.ttft for r in single):.2f}x")
    same_single = sum(a.text == b.text for a, b in zip(raw, single, strict=True))
    same_together = sum(a.text == b.text for a, b in zip(single, together, strict=False))
    # Later turns build on earlier replies, so compare each chat's first turn only.
    same_chats = sum(x[0].text == y[0].text for x, y in zip(raw_chats, engine_chats,
                                                             strict=False))
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
