"""GET /metrics: Prometheus text, counters from committed events, live gauges."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server import Api, ServerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

REQUIRED = {
    "localchat_queue_depth", "localchat_generating", "localchat_generations_total",
    "localchat_tokens_generated_total", "localchat_prompt_tokens_total",
    "localchat_time_to_first_token_seconds_count", "localchat_token_latency_seconds_count",
    "localchat_batch_occupancy", "localchat_kv_cache_lookups_total",
    "localchat_kv_cache_evictions_total", "localchat_sse_clients",
    "localchat_event_store_head", "localchat_projection_lag", "localchat_model_loaded",
}


def scrape(api: Api) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_when(api: Api, ready: object, timeout: float = 30) -> Samples:
    """Scrape until `ready(samples)`: the counters follow the log a moment behind it."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(api)
        if ready(samples) or time.monotonic() > deadline:  # type: ignore[operator]
            return samples
        time.sleep(0.1)


def test_metrics_need_no_token_and_name_everything(anon: Api) -> None:
    names = {name for name, _labels in scrape(anon)}
    assert names >= REQUIRED, REQUIRED - names
    assert value(scrape(anon), "localchat_model_loaded") == 1


def test_a_generation_moves_the_counters_by_exactly_its_own_events(
        user: Api, admin: Api) -> None:
    head = admin.quiet_head()
    before = scrape_when(admin, lambda s: value(s, "localchat_metrics_position") >= head)
    response = user.post("/api/llm/generate/", json={"prompt": "제주도는 어떤 곳인가요?",
                                                      "max_tokens": 6})
    assert response.status_code == 200, response.text
    tokens = response.json()["token_count"]
    end = admin.quiet_head()
    after = scrape_when(admin, lambda s: value(s, "localchat_metrics_position") >= end)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "localchat_event_store_head") >= end
    finished = sum(delta("localchat_generations_total", outcome="completed", reason=reason)
                   for reason in ("stop", "length"))
    assert finished == 1
    assert delta("localchat_replies_queued_total") == 1
    assert delta("localchat_tokens_generated_total") == tokens
    assert delta("localchat_prompt_tokens_total") > 0
    assert delta("localchat_time_to_first_token_seconds_count") == 1
    assert delta("localchat_generation_seconds_count") == 1
    assert value(after, "localchat_queue_depth") == 0
    assert value(after, "localchat_projection_lag", projection="messages") >= 0
    assert value(after, "localchat_projection_position", projection="messages") > 0


def test_a_failed_generation_counts_under_its_error_code(user: Api, admin: Api) -> None:
    """A prompt longer than the context fails as context_too_long, a real failure."""
    admin.quiet_head()
    before = scrape(admin)
    long_prompt = "가나다라마바사 " * 3500  # far beyond 4096 tokens
    response = user.post("/api/llm/generate/", json={"prompt": long_prompt, "max_tokens": 8})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_too_long"
    end = admin.quiet_head()
    after = scrape_when(admin, lambda s: value(s, "localchat_metrics_position") >= end)
    failed = (value(after, "localchat_generations_total", outcome="failed",
                    reason="context_too_long")
              - value(before, "localchat_generations_total", outcome="failed",
                      reason="context_too_long"))
    assert failed == 1


def test_open_event_streams_are_counted(server: ServerProcess, user: Api, admin: Api) -> None:
    session = user.new_session(title="스트림")
    before = value(scrape(admin), "localchat_sse_clients")
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {user.token}"}) as http, \
            http.stream("GET", f"/api/sessions/{session['id']}/stream/") as response:
        assert response.status_code == 200
        during = scrape_when(admin, lambda s: value(s, "localchat_sse_clients") >= before + 1)
        assert value(during, "localchat_sse_clients") == before + 1
    after = scrape_when(admin, lambda s: value(s, "localchat_sse_clients") <= before)
    assert value(after, "localchat_sse_clients") == before
