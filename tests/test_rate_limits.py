"""Rate limits per user: requests and uploads per period, open streams; 429 with Retry-After."""
from __future__ import annotations

import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from apsara import create_app
from apsara.config import ConfigError, from_env
from apsara.ratelimits import parse_rate_limits
from apsara.testing.fake_gemini import Reply
from tests.conftest import UserClient, make_settings
from tests.postgres import server_env
from tests.servers import call, gunicorn
from tests.test_usage import API, send, start, wait_until_written

# Every test here runs on both stores: the files (SQLite ledger) and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


def limited(tmp_path, raw: str, **extra):
    app = create_app(make_settings(tmp_path, rate_limits=parse_rate_limits(raw),
                                   api_keys={"alice": "key-a", "bob": "key-b"}, **extra))
    raw_client = app.test_client()
    return UserClient(raw_client, "key-a"), UserClient(raw_client, "key-b"), raw_client


def test_requests_per_minute(tmp_path):
    alice, bob, raw = limited(tmp_path, "requests=3/minute")
    assert [alice.get(API).status_code for _ in range(3)] == [200, 200, 200]
    refused = alice.get(API)
    assert refused.status_code == 429 and refused.json["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "requests=3/minute" in refused.json["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert bob.get(API).status_code == 200  # per user
    assert all(raw.get("/health").status_code != 429 for _ in range(5))  # never limited


def test_uploads_per_hour(tmp_path):
    alice, _, _ = limited(tmp_path, "uploads=1/hour")
    first = alice.post("/api/v1/files", data={"file": (io.BytesIO(PNG), "a.png")})
    assert first.status_code == 201
    again = alice.post("/api/v1/files", data={"file": (io.BytesIO(PNG), "b.png")})
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 60
    assert alice.get(API).status_code == 200  # other requests are not uploads


def test_open_streams(tmp_path, fake):
    alice, bob, _ = limited(tmp_path, "streams=1", gemini_api_key="k", gemini_base_url=fake.url)
    for client in (alice, bob):
        start(client, "c1")
        start(client, "c2")
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    open_stream = alice.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    next(iter(open_stream.response))
    refused = alice.post(f"{API}/c2/messages", json={"text": "go"}, headers={"Accept": "text/event-stream"})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    assert "streams=1" in refused.json["error"]["message"]
    assert alice.get(f"{API}/c2").json["message_count"] == 0
    assert send(bob, "go", "c1", stream=True).status_code == 200  # another user's streams are theirs
    gate.set()
    open_stream.get_data()
    open_stream.close()
    wait_until_written(alice, "c1")
    assert send(alice, "go", "c2", stream=True).status_code == 200  # the slot was given back
    assert send(alice, "go", "c1").status_code == 201  # a JSON turn is not a stream


def test_following_a_reply_holds_a_stream_slot(tmp_path, fake):
    alice, _, _ = limited(tmp_path, "streams=1", gemini_api_key="k", gemini_base_url=fake.url)
    start(alice, "c1")
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    open_stream = alice.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    chunks, seen = iter(open_stream.response), ""
    while "event: reply_start" not in seen or not seen.endswith("\n\n"):
        seen += next(chunks).decode()
    reply_id = re.search(r'"id": ?"(m[^"]+)"', seen.split("event: reply_start", 1)[1]).group(1)
    events = f"{API}/c1/messages/{reply_id}/events"
    refused = alice.get(events)
    assert refused.status_code == 429 and "streams=1" in refused.json["error"]["message"]
    gate.set()
    open_stream.get_data()
    open_stream.close()
    wait_until_written(alice, "c1")
    replayed = alice.get(events)  # the slot was given back: the ended reply replays
    assert replayed.status_code == 200 and "event: done" in replayed.get_data(as_text=True)


@pytest.mark.parametrize("raw", ["requests=lots", "streams=0", "streams=two", "posts=5/minute",
                                 "requests=5/minute,requests=6/minute", "requests"])
def test_bad_limits_refuse_to_start(raw):
    with pytest.raises(ConfigError, match="APSARA_RATE_LIMITS"):
        from_env({"APSARA_RATE_LIMITS": raw})


def test_limits_parse():
    assert parse_rate_limits("requests=120/minute, streams=4,uploads=60/hour") == {
        "requests": "120/minute", "streams": 4, "uploads": "60/hour"}


@pytest.mark.slow
def test_counters_are_shared_by_two_workers(tmp_path):
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "APSARA_RATE_LIMITS": "requests=10/minute", **server_env()}
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, workers=2, worker_class="sync", log_path=log) as base:
        with ThreadPoolExecutor(max_workers=8) as pool:
            wait_for_workers(base, log, pool)
            served_before = len(log.read_text().splitlines())
            statuses = list(pool.map(lambda _: call("GET", f"{base}/api/v1/conversations")[0], range(30)))
        time.sleep(0.2)
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    lines = log.read_text().splitlines()[served_before:]
    assert len({re.search(r"pid=(\d+)", line)[1] for line in lines if "route=/api/v1/conversations" in line}) == 2


def wait_for_workers(base, log, pool, workers=2):
    """Until both workers answer (the second may still be starting); /health is never limited."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        list(pool.map(lambda _: call("GET", f"{base}/health"), range(16)))
        if len(set(re.findall(r"pid=(\d+)", log.read_text()))) >= workers:
            return
    raise AssertionError("the second worker never answered")
