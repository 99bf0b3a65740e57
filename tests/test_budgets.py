"""Budgets: a turn over its user's limit is refused before Gemini is called, and
concurrent turns cannot together overrun it by more than one turn's reservation."""
from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from apsara import create_app
from apsara.config import ConfigError, from_env
from apsara.testing.fake_gemini import Reply
from tests.conftest import UserClient, make_settings, parse_sse
from tests.postgres import server_env
from tests.servers import call, gunicorn
from tests.test_usage import API, assert_ledger_matches_bill, send, start, usage, wait_until_written

# Every test here runs on both stores: the files (SQLite ledger) and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")


def budget_app(tmp_path, fake, budgets, **extra):
    return create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                    budgets={"default": {}, "users": {}, **budgets}, **extra))


def seconds_to_midnight() -> float:
    now = datetime.now(timezone.utc)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()


def test_a_turn_over_budget_is_refused_before_gemini_and_stores_nothing(tmp_path, fake):
    client = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 10}}).test_client()
    start(client)
    assert send(client, "one two three four five six seven eight nine ten").status_code == 201
    calls_before = len(fake.generate_requests())
    before = client.get(f"{API}/c1").json
    for body in ({}, {"stream": True}):
        response = send(client, "again", **body)
        assert response.status_code == 429 and response.mimetype == "application/json"
        error = response.json["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED" and "tokens_per_day" in error["message"]
        assert abs(int(response.headers["Retry-After"]) - seconds_to_midnight()) < 5
    response = client.post("/api/v1/generate", json={"text": "stateless"})
    assert response.status_code == 429
    assert len(fake.generate_requests()) == calls_before  # Gemini was never called
    assert client.get(f"{API}/c1").json == before  # nothing stored


def test_user_overrides_and_cost_limits(tmp_path, fake):
    app = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1_000_000},
                                      "users": {"alice": {"usd_per_month": 0.0000001, "tokens_per_day": None}}},
                     api_keys={"alice": "key-a", "bob": "key-b"})
    raw = app.test_client()
    alice, bob = UserClient(raw, "key-a"), UserClient(raw, "key-b")
    for client in (alice, bob):
        start(client)
        assert send(client, "hello there").status_code == 201
    refused = send(alice, "more")
    assert refused.status_code == 429 and "usd_per_month" in refused.json["error"]["message"]
    first_of_next_month = (datetime.now(timezone.utc).replace(day=1) + timedelta(days=32)).replace(day=1)
    assert first_of_next_month.date().isoformat() in refused.json["error"]["message"]
    assert send(bob, "more").status_code == 201  # bob keeps the default


def test_running_turns_hold_their_reservation(tmp_path, fake):
    # Each turn reserves about 600 tokens (its max_output_tokens and a little input).
    client = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1000}}).test_client()
    for name in ("c1", "c2", "c3"):
        start(client, name, settings={"max_output_tokens": 600})
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " one"], hold=gate))
    first = client.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    next(iter(first.response))  # the first turn is running, holding ~600
    fake.push(Reply(parts=["quick"]))
    assert send(client, "go", "c2").status_code == 201  # 600 reserved < 1000: allowed
    gate_two = threading.Event()
    fake.push(Reply(parts=["held"], hold=gate_two))
    second = client.post(f"{API}/c2/messages", json={"text": "go", "stream": True}, buffered=False)
    next(iter(second.response))
    refused = send(client, "go", "c3")  # two running turns hold ~1200 >= 1000
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    assert "still running" in refused.json["error"]["message"]
    gate.set()
    gate_two.set()
    b"".join(first.response), b"".join(second.response)
    wait_until_written(client, "c1"), wait_until_written(client, "c2")
    assert send(client, "go", "c3").status_code == 201  # settled: only what was spent counts


@pytest.mark.parametrize("raw", ['{"default": {"tokens_per_week": 5}}', '{"users": {"a": {"usd_per_day": -1}}}',
                                 "not json", '{"default": 5}', '{"others": {}}'])
def test_bad_budgets_refuse_to_start(raw):
    with pytest.raises(ConfigError, match="APSARA_BUDGETS"):
        from_env({"APSARA_BUDGETS": raw})


@pytest.mark.slow
def test_twenty_concurrent_turns_across_two_workers_stay_within_one_reservation(tmp_path, fake):
    limit, max_output = 1000, 60
    # Each turn costs 120 tokens (60 words in, 60 out: all of max_output_tokens) and reserves
    # 140 (60 output, and 80 for the 239 characters in: it guesses 3 characters a token).
    # Unshared or racy reservations would let far more than 8 turns start at once.
    fake.default = Reply(parts=[f" w{n}" for n in range(max_output)], delay_s=0.4)
    text = " ".join("abc" for _ in range(60))
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url,
           "APSARA_BUDGETS": json.dumps({"default": {"tokens_per_day": limit}}), **server_env()}
    with gunicorn(env, workers=2) as base:
        url = f"{base}/api/v1/conversations"
        for n in range(20):  # titled: no automatic title call joins the turns' count
            assert call("POST", url, {"id": f"c{n}", "title": f"c{n}",
                                      "settings": {"max_output_tokens": max_output}})[0] == 201
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda n: call("POST", f"{url}/c{n}/messages", {"text": text}), range(20)))
        statuses = [status for status, _ in results]
        assert statuses.count(201) >= 1 and statuses.count(429) >= 1, statuses
        for n, (status, body) in enumerate(results):
            if status == 429:
                assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
                assert call("GET", f"{url}/c{n}")[1]["message_count"] == 0  # refused: nothing stored
        status, report = call("GET", f"{base}/api/v1/usage")
    one_reservation = math.ceil(len(text) / 3) + max_output
    assert report["totals"]["total_tokens"] <= limit + one_reservation
    assert report["totals"]["calls"] == statuses.count(201)
    billed = fake.billed_totals()
    assert report["totals"]["total_tokens"] == billed["total_tokens"] and report["totals"]["calls"] == billed["calls"]


def test_a_dead_workers_reservation_is_freed(tmp_path, fake):
    import subprocess
    import sys

    app = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1000}})
    client = app.test_client()
    start(client)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ledger = app.extensions["apsara"].usage.ledger
    reservation = ledger.reserve("local", 5000, 1.0, lambda spending: None)
    # as if that process had reserved and then been killed
    _sql(ledger, "UPDATE reservations SET pid=? WHERE id=?", (gone.pid, reservation))
    assert send(client, "hello").status_code == 201
    assert _sql(ledger, "SELECT count(*) FROM reservations")[0][0] == 0


def _sql(ledger, statement: str, args=()):
    """A statement on the ledger's own database, whichever store runs."""
    if hasattr(ledger.db, "write"):  # the SQLite file
        with ledger.db.write() as sql:
            return sql.execute(statement, args).fetchall()
    with ledger.db.connection() as conn:
        cursor = conn.execute(statement.replace("?", "%s"), args)
        return cursor.fetchall() if cursor.description else None


def test_an_auto_turn_over_budget_never_asks_the_judge(tmp_path, fake):
    client = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 3}},
                        auto_judge_model="gemini-3.5-flash-lite").test_client()
    start(client, model="auto")
    fake.push(Reply(parts=["lite"]), Reply(parts=["Hi there friend"]))
    assert send(client, "hello").status_code == 201  # the judge and the reply: over 3 tokens
    asked = len(fake.generate_requests())
    assert send(client, "hello again").status_code == 429
    assert client.post("/api/v1/route", json={"text": "hi"}).status_code == 429
    assert len(fake.generate_requests()) == asked
    assert_ledger_matches_bill(client, fake)


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_round_is_held_too_and_a_used_up_budget_ends_the_turn(tmp_path, fake, stream):
    client = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1000}}).test_client()
    start(client, tools=["calculator"])
    # The first call alone uses up the day's 1,000 tokens: the model's next answer is never asked for.
    fake.push(Reply(parts=[{"functionCall": {"name": "calculator", "args": {"expression": "6 * 7"}}}],
                    usage={"promptTokenCount": 1400, "candidatesTokenCount": 100, "totalTokenCount": 1500}),
              Reply(parts=["It is 42."]))
    response = send(client, "6*7?", stream=stream)
    if stream:
        events, _ = parse_sse(response.get_data(as_text=True))
        name, data = events[-1][0], events[-1][2]
        assert name == "error" and data["error"]["code"] == 429
        reply = data["reply"]
    else:  # the turn's own error, as any failed reply's: with the reply as stored
        assert response.status_code == 429 and "tokens_per_day" in response.json["error"]["message"]
        assert int(response.headers["Retry-After"]) > 0
        reply = response.json["reply"]
    assert len(fake.generate_requests()) == 1
    assert reply["status"] == "error" and "tokens_per_day" in reply["error"]["message"]
    # What the turn did is kept and shown: the call and its result.
    assert [p["type"] for p in reply["parts"]] == ["function_call", "function_response"]
    assert reply["parts"][1]["response"]["result"] == 42
    stored = client.get(f"{API}/c1").json["messages"][-1]
    assert stored["id"] == reply["id"] and stored["status"] == "error"
    assert_ledger_matches_bill(client, fake)
    assert send(client, "again").status_code == 429


def test_a_function_round_within_the_budget_runs_on(tmp_path, fake):
    client = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1_000_000}}).test_client()
    start(client, tools=["calculator"])
    fake.push(Reply(parts=[{"functionCall": {"name": "calculator", "args": {"expression": "6 * 7"}}}],
                    usage={"promptTokenCount": 1400, "candidatesTokenCount": 100, "totalTokenCount": 1500}),
              Reply(parts=["It is 42."]))
    reply = send(client, "6*7?").json["reply"]
    assert reply["status"] == "complete" and reply["parts"][-1]["text"] == "It is 42."
    assert len(fake.generate_requests()) == 2
    assert usage(client)["totals"]["total_tokens"] >= 1500
    assert_ledger_matches_bill(client, fake)


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_ends_even_when_its_budget_hold_cannot_be_released(tmp_path, fake, stream):
    # The ledger refuses the release (a full disk, the database away): the reply still ends,
    # and the conversation takes the next message.
    app = budget_app(tmp_path, fake, {"default": {"tokens_per_day": 1_000_000}})
    client = app.test_client()
    ledger = app.extensions["apsara"].usage.ledger
    release, failed = ledger.release, []

    def refusing(reservation_id):
        if not failed:
            failed.append(reservation_id)
            raise OSError(28, "No space left on device")
        return release(reservation_id)

    ledger.release = refusing
    start(client)
    fake.push(Reply(parts=["kept"]))
    response = send(client, "hello", stream=stream)
    assert response.status_code == (200 if stream else 201)
    if stream:
        events, _ = parse_sse(response.get_data(as_text=True))
        assert events[-1][0] == "done" and events[-1][2]["text"] == "kept"
    assert failed
    assert client.get(f"{API}/c1").json["messages"][1]["status"] == "complete"
    assert send(client, "next").status_code == 201
