"""The batching engine with the real model: replies decoded together, per-chat KV state.

Replies are checked by content where the model answers reliably at temperature 0: asked to
"Repeat the word 'X' three times.", it writes X, and none of the other prompts' words.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.inference.batched_engine import BatchedEngine, StepRecord, _Entry
from app.inference.engine import Turn
from app.inference.jobs import Done, Event, Failed, GenerationRequest, Job, Started, Text
from app.inference.kv_cache import SeqStateCache
from app.inference.sampling import GenerationParams, TextStream

SYSTEM = "You are a helpful assistant."
WORDS = ["사과", "바나나", "고양이", "김치"]
N_CTX = 512
GREEDY = GenerationParams(temperature=0.0, top_p=0.95, max_tokens=24)


def make_engine(**options: object) -> BatchedEngine:
    settings = Settings()
    # One thread: on a machine shared with other jobs, two spinning threads stall each other.
    kwargs: dict[str, object] = {"n_ctx": N_CTX, "n_parallel": 4, "n_threads": 1, "n_batch": 64}
    kwargs.update(options)
    return BatchedEngine(settings.model_path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchedEngine]:
    engine = make_engine()
    yield engine
    engine.close()


class Collector:
    """A job's events, in order; optionally also appended to a log shared between jobs."""

    def __init__(self, shared: list[tuple[Collector, Event]] | None = None) -> None:
        self.events: list[Event] = []
        self.shared = shared

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.shared is not None:
            self.shared.append((self, event))

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, Text))


def prompt(engine: BatchedEngine, *turns: str, max_tokens: int = 24,
           system: str = SYSTEM) -> list[int]:
    roles = ["user", "assistant"]
    history = [Turn(roles[i % 2], t) for i, t in enumerate(turns)]
    return engine.prepare(system, history, max_tokens).tokens


def submit(engine: BatchedEngine, tokens: list[int], params: GenerationParams = GREEDY,
           sink: Collector | None = None, **request: object) -> tuple[Job, Collector]:
    sink = sink or Collector()
    job = engine.submit(GenerationRequest(tokens, params, **request), sink)  # type: ignore[arg-type]
    return job, sink


def finish(*jobs: Job) -> None:
    for job in jobs:
        assert job.done.wait(120), f"job {job.id} did not finish"


def ask(engine: BatchedEngine, tokens: list[int], **request: object) -> tuple[Job, Collector]:
    job, sink = submit(engine, tokens, **request)  # type: ignore[arg-type]
    finish(job)
    return job, sink


def repeat(word: str) -> str:
    return f"Repeat the word '{word}' three times."


# -- batching ------------------------------------------------------------------------------

def test_four_prompts_decode_together_and_each_answers_its_own(engine: BatchedEngine) -> None:
    steps_before = engine.stats.steps
    jobs = [submit(engine, prompt(engine, repeat(word))) for word in WORDS]
    finish(*(job for job, _ in jobs))
    for word, (job, sink) in zip(WORDS, jobs, strict=True):
        assert job.outcome in (Done("stop"), Done("length"))
        assert isinstance(sink.events[0], Started) and sink.events[-1] == job.outcome
        assert word in sink.text, (word, sink.text)
        assert not [w for w in WORDS if w != word and w in sink.text], (word, sink.text)
        assert job.stats.generated_tokens == sum(
            e.tokens for e in sink.events if isinstance(e, Text))
    generated = [job.stats.generated_tokens for job, _ in jobs]
    # Together: one step per token of the longest reply (plus joins), not one per token of all.
    assert sum(generated) > max(generated) + 4
    assert engine.stats.steps - steps_before <= max(generated) + 4


def traced(engine: BatchedEngine, *prompts: list[int]) -> tuple[list[Job], list[StepRecord]]:
    """The prompts arriving at the same moment (the decode thread is held while they are
    submitted: its lock is reentrant), decoded to the end, with the engine's steps."""
    engine.trace = []
    try:
        with engine._cond:
            jobs = [submit(engine, tokens)[0] for tokens in prompts]
        finish(*jobs)
        return jobs, engine.trace
    finally:
        engine.trace = None


def test_prompts_arriving_together_are_read_in_one_step_and_all_answered_from_it() -> None:
    wide = make_engine(n_batch=256)
    try:
        jobs, steps = traced(wide, *(prompt(wide, repeat(w)) for w in WORDS))
    finally:
        wide.close()
    ids = {job.id for job in jobs}
    first = steps[0]
    assert set(first.admitted) == ids
    # Every prompt whole in the first step, and every reply's first token sampled after it:
    # none waits for another's prompt, nor for generated-token steps.
    assert {p.job for p in first.parts if p.prefill and p.sampled} == ids
    for job in jobs:
        assert sum(p.tokens for p in first.parts if p.job == job.id) \
            == job.stats.evaluated_tokens == job.stats.prompt_tokens - job.stats.reused_tokens
    assert not any(p.prefill for s in steps[1:] for p in s.parts)
    # Laid out in sequence order (llama.cpp runs consecutive sequences in one pass).
    for step in steps:
        assert [p.seq for p in step.parts] == sorted(p.seq for p in step.parts)


def test_a_short_prompt_is_answered_before_a_long_one_arriving_with_it(
        engine: BatchedEngine) -> None:
    # Not the long prompt of the next test: a slot holding it would spare that test's read.
    long_prompt = prompt(engine, "Summarise: " + " ".join(["하늘은 높고 맑다."] * 15))
    short_prompt = prompt(engine, repeat("사과"))
    (long, short), steps = traced(engine, long_prompt, short_prompt)
    assert long.stats.evaluated_tokens > 3 * engine.n_batch
    reads = [s for s in steps if any(p.job == long.id and p.prefill for p in s.parts)]
    assert len(reads) >= 4  # chunked: at most n_batch tokens a step
    assert all(sum(p.tokens for p in s.parts) <= engine.n_batch for s in steps)
    # The short prompt was read and sampled in the first step, beside the long one's chunk.
    assert any(p.job == short.id and p.prefill and p.sampled for p in steps[0].parts)
    # From the next step on the short reply gets a token at every step, while the long
    # prompt is still being read.
    with_short = [i for i, s in enumerate(steps)
                  if any(p.job == short.id and not p.prefill for p in s.parts)]
    assert len(with_short) >= 3 and with_short == list(range(1, len(with_short) + 1))
    assert with_short[0] < steps.index(reads[-1])


def test_short_prompts_arriving_beside_a_running_reply_are_read_whole_in_one_step() -> None:
    wide = make_engine(n_batch=256)
    try:
        shorts = [prompt(wide, repeat(w), system=f"Conversation {n}.")
                  for n, w in enumerate(WORDS[:3])]
        # Together more than a chunk beside decoding, each less.
        assert all(len(p) <= wide.prefill_beside_decoding for p in shorts)
        assert sum(len(p) for p in shorts) > wide.prefill_beside_decoding
        decoding = threading.Event()
        story = wide.submit(GenerationRequest(
            prompt(wide, "Write a long story about the sea."), GenerationParams(0.0, 0.95, 48),
        ), lambda event: decoding.set() if isinstance(event, Text) else None)
        assert decoding.wait(60)
        jobs, steps = traced(wide, *shorts)
        finish(story)
    finally:
        wide.close()
    reads = [s for s in steps if any(p.prefill for p in s.parts)]
    assert len(reads) == 1  # all three read in one step, each whole, beside the story
    assert {p.job for p in reads[0].parts if p.prefill and p.sampled} == {j.id for j in jobs}
    assert any(not p.prefill for p in reads[0].parts)


def test_a_long_prompt_is_read_in_chunks_while_others_decode(engine: BatchedEngine) -> None:
    log: list[tuple[Collector, Event]] = []
    story, decoding = Collector(log), threading.Event()

    def story_sink(event: Event) -> None:
        story(event)
        if isinstance(event, Text):
            decoding.set()

    story_job = engine.submit(GenerationRequest(
        prompt(engine, "Write a long story about the sea."), GenerationParams(0.0, 0.95, 64),
    ), story_sink)
    long_prompt = prompt(engine, repeat("김치") + " " + " ".join(["바다는 넓고 푸르다."] * 15))
    assert len(long_prompt) > 4 * engine.n_batch
    # The long prompt arrives while the story is decoding, so its prefill shares steps.
    assert decoding.wait(60)
    long = Collector(log)
    long_job, _ = submit(engine, long_prompt, sink=long)
    finish(story_job, long_job)

    began = next(i for i, (c, e) in enumerate(log) if c is long and isinstance(e, Started))
    first = next(i for i, (c, e) in enumerate(log) if c is long and isinstance(e, Text))
    story_tokens_meanwhile = [e for c, e in log[began:first] if c is story and isinstance(e, Text)]
    assert len(story_tokens_meanwhile) >= 3, "the story stalled while the long prompt was read"
    # Each reply is about its own prompt: the Korean one echoes its Korean, the story has none.
    assert "김치" in long.text or "바다" in long.text, long.text
    assert not any("가" <= ch <= "힣" for ch in story.text), story.text
    assert long_job.stats.evaluated_tokens == len(long_prompt) - long_job.stats.reused_tokens


# -- KV state per chat ---------------------------------------------------------------------

def test_a_returning_chat_evaluates_only_its_new_tokens(engine: BatchedEngine) -> None:
    # A system prompt of its own: no slot holds more than a few tokens of this chat yet.
    system = "당신은 친절한 도우미입니다. Answer briefly."

    def turns(*texts: str) -> list[int]:
        return prompt(engine, *texts, system=system)

    first = turns(repeat("사과"))
    job1, sink1 = ask(engine, first, key="chat-returning")
    assert job1.stats.cache == "miss" and job1.stats.reused_tokens < len(first) // 2
    assert job1.stats.evaluated_tokens == len(first) - job1.stats.reused_tokens

    second = turns(repeat("사과"), sink1.text, repeat("고양이"))
    before = engine.stats.prompt_tokens_evaluated
    job2, sink2 = ask(engine, second, key="chat-returning")
    assert job2.stats.cache == "resident"
    assert job2.stats.reused_tokens >= len(first)
    assert job2.stats.evaluated_tokens == len(second) - job2.stats.reused_tokens
    assert engine.stats.prompt_tokens_evaluated - before == job2.stats.evaluated_tokens
    assert "고양이" in sink2.text

    # Another chat with the same history reads it again, all but a shared opening.
    job3, _ = ask(engine, second, key="chat-other")
    assert job3.stats.cache == "miss" and job3.stats.reused_tokens < len(first) // 2

    # Regenerate: the same prompt again re-reads one token; an edit keeps the shared prefix.
    job4, _ = ask(engine, second, key="chat-returning")
    assert job4.stats.evaluated_tokens == 1
    edited = turns(repeat("사과"), sink1.text, repeat("김치"))
    job5, sink5 = ask(engine, edited, key="chat-returning")
    shared = next(i for i, (a, b) in enumerate(zip(second, edited, strict=False)) if a != b)
    assert job5.stats.reused_tokens == shared
    assert "김치" in sink5.text


def test_keyless_conversations_resending_their_history_each_continue_their_own_slot() -> None:
    # /v1 clients: no key, every request carries the whole history. Four such chats with
    # the same system prompt take turns, as many chats as slots: turn 2 of each must find
    # the slot holding its turn 1 (not one another chat's, which shares only the system
    # prompt and the start of the request) and read only what is new.
    fresh = make_engine()
    try:
        system = "당신은 간결한 도우미입니다."
        first = {w: prompt(fresh, repeat(w), system=system) for w in WORDS}
        replies = {w: ask(fresh, first[w])[1].text for w in WORDS}
        for w in WORDS:
            second = prompt(fresh, repeat(w), replies[w], repeat(w), system=system)
            job, sink = ask(fresh, second)
            assert job.stats.cache == "none"
            assert job.stats.reused_tokens >= len(first[w]), (w, job.stats)
            assert job.stats.evaluated_tokens == len(second) - job.stats.reused_tokens
            assert w in sink.text, (w, sink.text)
    finally:
        fresh.close()


def test_a_forgotten_chat_starts_over_and_its_saved_state_is_gone(tmp_path: Path) -> None:
    small = make_engine(n_parallel=1, cache_dir=tmp_path)
    try:
        tokens = prompt(small, repeat("바나나"))
        ask(small, tokens, key="chat-a")
        ask(small, prompt(small, repeat("사과")), key="chat-b")  # evicts chat-a to disk
        assert len(list(tmp_path.rglob("*.kv"))) == 1
        small.forget("chat-a")
        small.forget("chat-b")
        job, _ = ask(small, tokens, key="chat-a")
        assert job.stats.cache == "miss"
        assert not list(tmp_path.rglob("*.kv"))  # chat-b's slot was free: nothing evicted
        again, _ = ask(small, tokens, key="chat-a")
        assert again.stats.cache == "resident" and again.stats.evaluated_tokens == 1
    finally:
        small.close()


def test_more_chats_than_slots_evict_to_disk_and_restore(tmp_path: Path,
                                                         engine: BatchedEngine) -> None:
    small = make_engine(n_parallel=2, cache_dir=tmp_path, cache_bytes=256 << 20)
    try:
        turn1 = {w: prompt(small, repeat(w)) for w in WORDS[:3]}
        replies = {w: ask(small, turn1[w], key=f"chat-{w}")[1].text for w in WORDS[:3]}
        # The third chat took the least recently used chat's slot; its state went to disk.
        assert small.stats.kv_evictions == 1
        files = list(tmp_path.rglob("*.kv"))
        assert len(files) == 1

        w = WORDS[0]
        turn2 = prompt(small, repeat(w), replies[w], repeat(WORDS[3]))
        job, sink = ask(small, turn2, key=f"chat-{w}")
        assert job.stats.cache == "restored" and small.stats.kv_restored == 1
        assert job.stats.reused_tokens >= len(turn1[w])
        assert job.stats.evaluated_tokens == len(turn2) - job.stats.reused_tokens
        assert small.stats.kv_evictions == 2  # the next least recently used made room
    finally:
        small.close()

    # The restored state is the state: the same turns with the chat kept resident all along
    # (the shared engine, same context per sequence) write the same reply.
    ask(engine, turn1[w], key="chat-resident-reference")
    reference, reference_sink = ask(engine, turn2, key="chat-resident-reference")
    assert reference.stats.cache == "resident"
    assert reference_sink.text == sink.text


def test_closing_saves_chats_and_a_new_engine_restores_them(tmp_path: Path) -> None:
    first = make_engine(n_parallel=2, cache_dir=tmp_path)
    tokens = prompt(first, repeat("바나나"))
    _, sink = ask(first, tokens, key="chat-kept")
    first.close()

    second = make_engine(n_parallel=2, cache_dir=tmp_path)
    try:
        turn2 = prompt(second, repeat("바나나"), sink.text, repeat("서울"))
        job, _ = ask(second, turn2, key="chat-kept")
        assert job.stats.cache == "restored" and job.stats.reused_tokens >= len(tokens)
    finally:
        second.close()


def test_the_disk_cache_keeps_within_its_budget(tmp_path: Path) -> None:
    cache = SeqStateCache(tmp_path, budget_bytes=3000)
    assert cache.put("a", [1, 2, 3], b"x" * 1000)
    assert cache.put("b", [4], b"y" * 1000)
    assert cache.put("c", [5, 6], b"z" * 1000)  # over budget: "a", the oldest, goes
    assert cache.take("a") is None
    assert cache.size_bytes() <= 3000
    saved = cache.take("b")
    assert saved is not None and saved.tokens == [4] and saved.data == b"y" * 1000
    assert cache.take("b") is None  # taken: the live slot owns it now
    assert not cache.put("huge", [1], b"h" * 5000)
    (tmp_path / next(p.name for p in tmp_path.glob("*.kv"))).write_bytes(b"garbage")
    assert cache.take("c") is None


# -- sampling ------------------------------------------------------------------------------

def test_a_seed_reproduces_a_sampled_reply(engine: BatchedEngine) -> None:
    tokens = prompt(engine, "Write a short poem about the moon.")
    hot = GenerationParams(temperature=1.0, top_p=0.95, max_tokens=32, seed=1234)
    texts = [ask(engine, tokens, params=hot)[1].text for _ in range(2)]
    other = ask(engine, tokens, params=GenerationParams(1.0, 0.95, 32, seed=4321))[1].text
    assert texts[0] == texts[1]
    assert other != texts[0]


def test_a_stop_string_ends_the_reply_before_it(engine: BatchedEngine) -> None:
    tokens = prompt(engine, repeat("고양이"))
    free = ask(engine, tokens)[1].text
    assert free.count("고양이") >= 1
    job, sink = ask(engine, tokens, params=GenerationParams(0.0, 0.95, 24, stop=("고양이",)))
    assert job.outcome == Done("stop")
    assert sink.text == free[:free.index("고양이")]


def test_text_stream_holds_back_a_possible_stop_and_whole_characters() -> None:
    stream = TextStream(("안녕히",))
    data = "네, 안녕하세요. 안녕히 가세요".encode()
    out = []
    for i in range(0, len(data), 2):  # two bytes at a time: characters arrive in pieces
        out.append(stream.push(data[i:i + 2]))
        if stream.stopped:
            break
    assert "".join(out) == "네, 안녕하세요. " and stream.stopped
    assert all("\ufffd" not in piece for piece in out)
    plain = TextStream(())
    assert plain.push("한".encode()[:2]) == "" and plain.push("한".encode()[2:]) == "한"


# -- failures stay with their own reply ----------------------------------------------------

def test_cancelling_one_reply_mid_batch_leaves_the_others_complete(engine: BatchedEngine) -> None:
    victim = Collector()
    victim_job: list[Job] = []

    def cancel_after_three(event: Event) -> None:
        victim(event)
        if sum(isinstance(e, Text) for e in victim.events) == 3:
            victim_job[0].cancel()

    jobs = [submit(engine, prompt(engine, repeat(w))) for w in WORDS[:3]]
    job = engine.submit(GenerationRequest(prompt(engine, "Write a long story about the sea."),
                                          GenerationParams(0.0, 0.95, 64)), cancel_after_three)
    victim_job.append(job)
    finish(job, *(j for j, _ in jobs))
    assert job.outcome == Done("cancelled")
    assert job.stats.generated_tokens == 3
    for word, (other, sink) in zip(WORDS, jobs, strict=False):
        assert other.outcome in (Done("stop"), Done("length")) and word in sink.text


def test_a_context_overflow_fails_only_its_own_reply(engine: BatchedEngine) -> None:
    story = prompt(engine, "끝없는 이야기를 들려주세요.")
    too_long = story * (N_CTX // len(story) + 1)
    assert len(too_long) >= N_CTX
    near_end = too_long[:N_CTX - 4]  # room for four tokens of reply
    good = [submit(engine, prompt(engine, repeat(w))) for w in WORDS[:2]]
    overflow, overflow_sink = submit(engine, too_long)
    edge, _ = submit(engine, near_end, params=GenerationParams(0.0, 0.95, 100))
    finish(overflow, edge, *(j for j, _ in good))
    assert isinstance(overflow.outcome, Failed) and overflow.outcome.code == "context_too_long"
    assert not any(isinstance(e, Text) for e in overflow_sink.events)
    assert edge.outcome in (Done("length"), Done("stop")) and edge.stats.generated_tokens <= 4
    for word, (job, sink) in zip(WORDS, good, strict=False):
        assert job.outcome in (Done("stop"), Done("length")) and word in sink.text


def test_deadlines_fail_only_their_own_reply(engine: BatchedEngine) -> None:
    story = prompt(engine, "Write a long story about the sea.")
    never_starts, _ = submit(engine, story, first_token_timeout=0.0)
    # Greedy, this story runs far longer than 0.2 s (it is cut at 64 tokens elsewhere).
    slow, slow_sink = submit(engine, story, params=GenerationParams(0.0, 0.95, 500),
                             timeout=0.2)
    fine, fine_sink = submit(engine, prompt(engine, repeat("사과")))
    finish(never_starts, slow, fine)
    assert never_starts.outcome == Failed("timeout", "The reply did not begin within 0 seconds.")
    assert isinstance(slow.outcome, Failed) and slow.outcome.code == "timeout"
    assert fine.outcome in (Done("stop"), Done("length")) and "사과" in fine_sink.text
    assert not slow_sink.events or isinstance(slow_sink.events[0], Started)


class BrokenDecodeEngine(BatchedEngine):
    """Fails to evaluate any batch holding the reply keyed "broken".

    A fake failure: the real llama.cpp cannot be made to fail on demand.
    """

    def _decode(self, entries: list[_Entry]) -> int:
        if any(entry.running.job.key == "broken" for entry in entries):
            return -3
        return super()._decode(entries)


def test_a_model_error_fails_only_its_own_reply() -> None:
    settings = Settings()
    broken_engine = BrokenDecodeEngine(settings.model_path, n_ctx=N_CTX, n_parallel=4,
                                       n_threads=1, n_batch=64)
    try:
        good = [submit(broken_engine, prompt(broken_engine, repeat(w)), key=f"good-{w}")
                for w in WORDS[:3]]
        broken, _ = submit(broken_engine, prompt(broken_engine, repeat("김치")), key="broken")
        finish(broken, *(j for j, _ in good))
        assert isinstance(broken.outcome, Failed) and broken.outcome.code == "generation_failed"
        for word, (job, sink) in zip(WORDS, good, strict=False):
            assert job.outcome in (Done("stop"), Done("length")) and word in sink.text
        again, sink = ask(broken_engine, prompt(broken_engine, repeat("김치")), key="fixed")
        assert again.outcome in (Done("stop"), Done("length")) and "김치" in sink.text
    finally:
        broken_engine.close()


def test_closing_interrupts_open_replies() -> None:
    closing = make_engine(n_parallel=1)
    story = prompt(closing, "Write a long story about the sea.")
    running, _ = submit(closing, story, params=GenerationParams(0.0, 0.95, 400))
    waiting, _ = submit(closing, story, params=GenerationParams(0.0, 0.95, 400))
    closing.close()
    assert running.outcome == Done("interrupted") and waiting.outcome == Done("interrupted")
    with pytest.raises(RuntimeError):
        closing.submit(GenerationRequest(story, GREEDY), Collector())
