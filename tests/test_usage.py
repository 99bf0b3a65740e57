"""The usage ledger counts exactly what Gemini billed, and GET /api/v1/usage reports it."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from apsara import create_app
from apsara.testing.fake_gemini import Reply
from tests.conftest import UserClient, make_settings, parse_sse

API = "/api/v1/conversations"
TOKENS = ("prompt_tokens", "output_tokens", "thought_tokens", "cached_tokens", "total_tokens")


def start(client, conversation_id="c1", **fields):
    response = client.post(API, json={"id": conversation_id, **fields})
    assert response.status_code == 201, response.json


def send(client, text, conversation_id="c1", **extra):
    return client.post(f"{API}/{conversation_id}/messages", json={"text": text, **extra})


def usage(client, **query) -> dict:
    response = client.get("/api/v1/usage", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def assert_ledger_matches_bill(client, fake):
    totals = usage(client)["totals"]
    billed = fake.billed_totals()
    assert {k: totals[k] for k in ("calls", *TOKENS)} == billed
    return totals


def wait_until_written(client, conversation_id="c1"):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = client.get(f"{API}/{conversation_id}").json["messages"][-1]
        if reply["status"] != "streaming":
            return reply
        time.sleep(0.05)
    raise AssertionError("the reply was never finished")


# -- the ledger against what the fake billed ---------------------------------------------
def test_streamed_and_whole_turns_with_thoughts(chat, fake):
    start(chat, settings={"include_thoughts": True})
    whole = send(chat, "one two three").json["reply"]
    streamed, _ = parse_sse(send(chat, "four five", stream=True).get_data(as_text=True))
    totals = assert_ledger_matches_bill(chat, fake)
    assert totals["calls"] == 2 and totals["thought_tokens"] > 0
    reply = streamed[-1][2]
    assert totals["total_tokens"] == whole["usage"]["total_tokens"] + reply["usage"]["total_tokens"]


def test_a_reply_that_failed_after_some_output(chat, fake):
    start(chat)
    fake.push(Reply(parts=["part", " way", " never"], fail_after=2))
    events, _ = parse_sse(send(chat, "go", stream=True).get_data(as_text=True))
    assert events[-1][0] == "error" and events[-1][2]["reply"]["text"] == "part way"
    totals = assert_ledger_matches_bill(chat, fake)
    assert totals["calls"] == 1 and totals["output_tokens"] == 2  # what Gemini reported before it broke


def test_sdk_retries_count_the_call_that_answered(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, gemini_retry_attempts=3))
    client = app.test_client()
    start(client)
    fake.push(Reply(error=(503, "overloaded")), Reply(parts=["made it"]))
    assert send(client, "hello").status_code == 201
    assert len(fake.generate_requests()) == 2
    assert assert_ledger_matches_bill(client, fake)["calls"] == 1


def test_every_function_call_round_is_a_call(chat, fake):
    start(chat, tools=["calculator"])
    fake.push(Reply(parts=[{"functionCall": {"id": "c-1", "name": "calculator", "args": {"expression": "6*7"}}}]),
              Reply(parts=["It is 42."]))
    assert send(chat, "6*7?").status_code == 201
    assert assert_ledger_matches_bill(chat, fake)["calls"] == 2


def test_the_auto_judge_is_counted(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_judge_model="gemini-3.5-flash-lite"))
    client = app.test_client()
    start(client, model="auto")
    fake.push(Reply(parts=["pro"]), Reply(parts=["A careful answer."]))
    assert send(client, "prove it").status_code == 201
    fake.push(Reply(parts=["lite"]))
    assert client.post("/api/v1/route", json={"text": "hi"}).json["classifier"] == "llm-judge"
    assert_ledger_matches_bill(client, fake)
    by_model = {g["key"]: g["calls"] for g in usage(client, group_by="model")["groups"]}
    assert by_model == {"gemini-3.5-flash-lite": 2, "gemini-3.1-pro-preview": 1}


def test_a_client_gone_mid_stream_is_billed_for_the_whole_reply(chat, fake):
    """The reply goes on without its client, and so does its bill."""
    start(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["partial", " and", " the rest"], hold=gate))
    response = chat.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    next(iter(response.response))
    response.close()
    gate.set()
    assert wait_until_written(chat)["status"] == "complete"
    assert assert_ledger_matches_bill(chat, fake)["output_tokens"] == 4


def test_a_stream_stopped_halfway_counts_what_gemini_reported(chat_app, fake):
    """Stopping a reply closes the Gemini stream: Gemini bills what it had sent, and so does the ledger."""
    client = chat_app.test_client()
    start(client)
    gate = threading.Event()
    fake.push(Reply(parts=["kept", " lost", " too"], hold=gate))
    response = client.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    seen = b""
    for chunk in response.response:
        seen += chunk
        if b"event: delta" in seen:
            break
    reply_id = json.loads(seen.split(b"event: reply_start\n", 1)[1].split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
    stopped = client.post(f"{API}/c1/messages/{reply_id}/stop").json["reply"]
    assert stopped["status"] == "stopped" and stopped["text"] == "kept"
    response.close()
    gate.set()
    time.sleep(0.2)  # the fake notices the closed connection and sends no more
    totals = assert_ledger_matches_bill(client, fake)
    assert totals["calls"] == 1 and totals["output_tokens"] == 1


def test_image_model_called_by_a_text_model_is_counted(chat, fake):
    start(chat, tools=["image_generation"])
    picture = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    fake.push(Reply(parts=[{"functionCall": {"id": "i-1", "name": "generate_image", "args": {"prompt": "a cat"}}}]),
              Reply(parts=[picture]), Reply(parts=["Here it is."]))
    assert send(chat, "draw a cat").status_code == 201
    assert_ledger_matches_bill(chat, fake)
    models = {g["key"] for g in usage(chat, group_by="model")["groups"]}
    assert models == {"gemini-3.8-flash", "gemini-3.1-flash-image"}


# -- the report ---------------------------------------------------------------------------
def test_groups_and_dates(chat, fake):
    start(chat)
    start(chat, "c2")
    send(chat, "a b c")
    send(chat, "d e", "c2")
    chat.post("/api/v1/generate", json={"text": "no conversation"})
    today = datetime.now(timezone.utc).date()
    report = usage(chat, group_by="conversation")
    assert report["from"] == today.replace(day=1).isoformat() and report["to"] == today.isoformat()
    assert [g["key"] for g in report["groups"]] == [None, "c1", "c2"]
    assert sum(g["calls"] for g in report["groups"]) == report["totals"]["calls"] == 3
    by_day = usage(chat, group_by="day")["groups"]
    assert [g["key"] for g in by_day] == [today.isoformat()]
    assert "groups" not in usage(chat)
    yesterday = (today - timedelta(days=1)).isoformat()
    assert usage(chat, **{"from": yesterday, "to": yesterday})["totals"]["calls"] == 0


TODAY = datetime.now(timezone.utc).date()


@pytest.mark.parametrize("query, field", [
    ({"from": f"{TODAY.year}-13-01"}, "from"), ({"to": "yesterday"}, "to"), ({"group_by": "week"}, "group_by"),
    ({"from": TODAY.isoformat(), "to": (TODAY - timedelta(days=1)).isoformat()}, "from"),
    ({"user": "bob"}, "user"), ({"user": "../x"}, "user"), ({"colour": "red"}, "colour")])
def test_bad_queries_are_422(chat, query, field):
    response = chat.get("/api/v1/usage", query_string=query)
    assert response.status_code == 422
    assert field in response.json["error"]["details"]


def test_costs_come_from_the_price_file(tmp_path, fake):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gemini-3": {"input": 1.0, "output": 10.0, "cached_input": 0.1},
                                  "gemini-3.8": {"input": 2.0, "output": 20.0}}))
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, prices_path=str(prices)))
    client = app.test_client()
    start(client)
    fake.push(Reply(parts=["x"], usage={"promptTokenCount": 1000, "candidatesTokenCount": 200,
                                        "thoughtsTokenCount": 100, "totalTokenCount": 1300}))
    send(client, "hi")
    # the longest prefix wins; thoughts are priced as output
    assert usage(client)["totals"]["cost_usd"] == pytest.approx((1000 * 2.0 + 300 * 20.0) / 1e6)


def test_users_see_their_own_and_admins_anyones(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   api_keys={"alice": "key-a", "bob": "key-b"}, admin_keys=["key-root"]))
    raw = app.test_client()
    alice, bob, root = UserClient(raw, "key-a"), UserClient(raw, "key-b"), UserClient(raw, "key-root")
    for client, text in ((alice, "one"), (bob, "two three"), (bob, "four")):
        start(client, f"c{len(text)}")
        send(client, text, f"c{len(text)}")
    assert usage(alice)["totals"]["calls"] == 1 and usage(bob)["totals"]["calls"] == 2
    assert usage(alice, user="alice")["user"] == "alice"  # asking for oneself is fine
    assert alice.get("/api/v1/usage?user=bob").status_code == 422
    assert usage(root, user="bob")["totals"]["calls"] == 2
    everyone = usage(root, user="*", group_by="user")
    assert [(g["key"], g["calls"]) for g in everyone["groups"]] == [("alice", 1), ("bob", 2)]
    by_conversation = usage(root, user="*", group_by="conversation")["groups"]
    assert {(g["user"], g["key"]) for g in by_conversation} == {("alice", "c3"), ("bob", "c9"), ("bob", "c4")}
    assert raw.get("/api/v1/usage").status_code == 401
    assert root.get(API).status_code == 401  # an admin key that is no user's reads usage only


def test_every_generate_call_goes_through_the_metered_client():
    """The ledger sees a call only through GeminiClient.generate/stream: nothing may call the SDK's
    generate methods another way (countTokens is free and may)."""
    from pathlib import Path

    import apsara

    root = Path(apsara.__file__).parent
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if path.name != "metering.py" and "testing" not in path.parts
                 and ("generate_content(" in path.read_text() or "generate_content_stream(" in path.read_text())]
    assert offenders == []
