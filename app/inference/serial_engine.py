"""The jobs interface over an engine that writes one reply at a time (`LlamaEngine`, fakes).

Jobs run in submission order in a thread of their own; cancel and deadlines are checked
between tokens. Stop strings apply to the text; seeds and per-chat KV state do not exist
here (such an engine keeps only the previous prompt's prefix).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time

from app.inference.engine import Engine, Finished, PreparedPrompt, SamplingParams, Turn
from app.inference.jobs import (
    MODEL_FAILED,
    Done,
    EventSink,
    Failed,
    GenerationRequest,
    Job,
    Started,
    Text,
)
from app.inference.sampling import TextStream

log = logging.getLogger(__name__)


class SerialEngine:
    n_parallel = 1

    def __init__(self, engine: Engine) -> None:
        self.inner = engine
        self.info = engine.info
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._open = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="serial-engine", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> int:
        return self._open

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        return self.inner.prepare(system_prompt, history, max_tokens)

    def submit(self, request: GenerationRequest, sink: EventSink) -> Job:
        job = Job(next(self._ids), request, sink)
        with self._lock:
            self._open += 1
        self._jobs.put(job)
        return job

    def close(self) -> None:
        """Stop taking jobs (those still waiting end as interrupted); the inner engine stays."""
        self._jobs.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._open -= 1
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _end(job, Done("interrupted"))

    def _run(self, job: Job) -> None:
        ended = job.expired(time.monotonic())
        if ended is not None:
            _end(job, ended)
            return
        request, params = job.request, job.request.params
        job.emit(Started(len(request.prompt), 0, "none"))
        text = TextStream(params.stop)
        stream = self.inner.stream(
            PreparedPrompt(request.prompt, 0, params.max_tokens),
            SamplingParams(params.temperature, params.top_p, params.max_tokens))
        outcome: Done | Failed = Done("stop")
        try:
            for item in stream:
                if isinstance(item, Finished):
                    outcome = Done(item.reason)
                    break
                now = time.monotonic()
                if job.stats.first_token_seconds is None:
                    job.stats.first_token_seconds = now - job.submitted
                job.stats.generated_tokens += 1
                job.emit(Text(text.push(item.text.encode("utf-8")), 1))
                if text.stopped:
                    break
                ended = job.expired(time.monotonic())
                if ended is not None:
                    outcome = ended
                    break
        except Exception:
            log.exception("the model failed on a reply")
            outcome = Failed("generation_failed", MODEL_FAILED)
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()
        if isinstance(outcome, Done) and outcome.reason in ("stop", "length"):
            rest = text.flush()
            if rest:
                job.emit(Text(rest, 0))
        _end(job, outcome)


def _end(job: Job, outcome: Done | Failed) -> None:
    job.outcome = outcome
    job.emit(outcome)
    job.done.set()
