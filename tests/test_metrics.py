"""GET /metrics: Prometheus text behind APSARA_METRICS_TOKEN, counting every worker."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apsara import create_app
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings
from tests.servers import call, gunicorn
from tests.test_rate_limits import wait_for_workers
from tests.test_usage import send, start

TOKEN = {"Authorization": "Bearer metrics-secret"}


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of every sample."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics", headers=TOKEN)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_metrics_is_404_without_a_token_and_401_with_a_wrong_one(tmp_path, client):
    assert client.get("/metrics").status_code == 404
    app = create_app(make_settings(tmp_path, metrics_token="metrics-secret"))
    guarded = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "metrics-secret"}):
        response = guarded.get("/metrics", headers=headers)
        assert response.status_code == 401 and response.json["error"]["status"] == "UNAUTHENTICATED"
    assert guarded.get("/metrics", headers=TOKEN).status_code == 200


def test_turns_requests_tokens_and_refusals_are_counted(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   metrics_token="metrics-secret",
                                   budgets={"default": {"tokens_per_day": 4}, "users": {}}))
    client = app.test_client()
    before = scrape(client)
    start(client, model="auto")
    fake.push(Reply(parts=["one", " two", " three"], usage=None))
    streamed = send(client, "hello there", stream=True)
    assert streamed.get_data(as_text=True).count("event: done") == 1
    during = scrape(client)
    streamed.close()  # what a WSGI server does once the last byte is out
    assert send(client, "and more").status_code == 429  # 5 tokens spent of 4: refused before routing
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    model = client.get("/api/v1/conversations/c1").json["messages"][1]["model"]
    assert grew("apsara_gemini_calls_total", model=model, purpose="reply", outcome="ok") == 1
    assert grew("apsara_gemini_tokens_total", model=model, kind="output") == 3
    assert grew("apsara_gemini_call_duration_seconds_count", model=model) == 1
    assert grew("apsara_gemini_time_to_first_token_seconds_count", model=model) == 1
    assert grew("apsara_http_requests_total", route="/api/v1/conversations/<conversation_id>/messages",
                method="POST", status="429") == 1
    assert grew("apsara_budget_refusals_total", limit="tokens_per_day") == 1
    assert sum(grew("apsara_auto_decisions_total", tier=t, classifier="local-logistic-v1")
               for t in ("lite", "flash", "pro", "image")) == 1
    assert grew("apsara_store_write_duration_seconds_count") >= 3
    assert value(during, "apsara_active_streams") - value(before, "apsara_active_streams") == 1
    assert grew("apsara_active_streams") == 0  # the stream has ended


def test_unknown_paths_do_not_make_new_series(tmp_path):
    app = create_app(make_settings(tmp_path, metrics_token="metrics-secret"))
    client = app.test_client()
    for n in range(3):
        client.get(f"/no/such/path/{n}")
    found = scrape(client)
    routes = {dict(labels).get("route") for name, labels in found if name == "apsara_http_requests_total"}
    assert not any(route and route.startswith("/no/") for route in routes)
    assert value(found, "apsara_http_requests_total", route="unmatched", method="GET", status="404") >= 3


@pytest.mark.slow
def test_counts_come_from_every_worker(tmp_path):
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "APSARA_METRICS_TOKEN": "metrics-secret"}
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, workers=2, worker_class="sync", log_path=log) as base:
        with ThreadPoolExecutor(max_workers=8) as pool:
            wait_for_workers(base, log, pool)
            served = list(pool.map(lambda _: call("GET", f"{base}/api/v1/conversations")[0], range(40)))
            assert served.count(200) == 40
            pids = set(re.findall(r"pid=(\d+) ", "\n".join(
                line for line in log.read_text().splitlines() if "route=/api/v1/conversations " in line)))
            assert len(pids) == 2, "the requests were all served by one worker"
            # Whichever worker answers the scrape, it reports both workers' counts.
            for _ in range(6):
                response = call_text(f"{base}/metrics")
                found = samples(response)
                assert value(found, "apsara_http_requests_total", route="/api/v1/conversations",
                             method="GET", status="200") == 40


def call_text(url: str) -> str:
    import urllib.request

    request = urllib.request.Request(url, headers=TOKEN)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


@pytest.mark.slow
def test_a_killed_workers_open_streams_stop_counting(tmp_path, fake):
    import os
    import signal
    import threading
    import time

    gate = threading.Event()
    fake.push(Reply(parts=["held", " open"], hold=gate))
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "APSARA_METRICS_TOKEN": "metrics-secret", "gemini": "k",
           "GEMINI_BASE_URL": fake.url}
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, workers=2, log_path=log) as base:
        with ThreadPoolExecutor(max_workers=8) as pool:
            wait_for_workers(base, log, pool)
            assert call("POST", f"{base}/api/v1/conversations", {"id": "c1"})[0] == 201
            pool.submit(call, "POST", f"{base}/api/v1/conversations/c1/messages", {"text": "go", "stream": True},
                        None, 30)

            def streams() -> float:
                return value(samples(call_text(f"{base}/metrics")), "apsara_active_streams")

            deadline = time.monotonic() + 10
            while streams() != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert streams() == 1
            for pid in set(re.findall(r"pid=(\d+)", log.read_text())):
                os.kill(int(pid), signal.SIGKILL)  # Gunicorn starts new workers
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if streams() == 0:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            assert streams() == 0
            gate.set()
