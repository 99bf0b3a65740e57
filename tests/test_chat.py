"""Sending messages through the real SDK to the wire-level fake: context, streams, failures."""
from __future__ import annotations

import base64
import threading
import time

import pytest

from apsara import create_app
from apsara.testing.fake_gemini import BAD_KEY, FakeGemini, Reply
from tests.conftest import make_settings, parse_sse

# Every test here runs on both stores: the files and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")

API = "/api/v1/conversations"


def new_conversation(client, **fields):
    response = client.post(API, json={"id": "c1", **fields})
    assert response.status_code == 201, response.json
    return response.json


def send(client, text, **extra):
    return client.post(f"{API}/c1/messages", json={"text": text, **extra})


def send_and_settle(client, text):
    """A JSON turn answers once its reply is stored; its job leaves the registry a moment
    later. Tests that then rewrite the stored reply wait for that, or a follower would be
    given the live job instead of what they wrote."""
    assert send(client, text).status_code == 201
    jobs = client.application.extensions["apsara"].chat.jobs
    deadline = time.monotonic() + 5
    while jobs.running():
        assert time.monotonic() < deadline
        time.sleep(0.01)


# -- context -------------------------------------------------------------------------
def test_multi_turn_context_is_exactly_what_gemini_receives(chat, fake):
    new_conversation(chat, system_instruction="You are Apsara.", settings={
        "temperature": 0.4, "top_p": 0.9, "top_k": 20, "max_output_tokens": 500, "stop_sequences": ["END"],
        "seed": 3, "thinking_level": "high"})
    fake.push(Reply(parts=["First answer."]), Reply(parts=["Second answer."]), Reply(parts=["Third."]))
    for text in ("one", "two", "three"):
        assert send(chat, text).status_code == 201
    request = fake.generate_requests()[-1]
    assert request["path"] == "/v1beta/models/gemini-3.8-flash:generateContent"
    assert request["headers"]["x-goog-api-key"] == "test-key-123"
    body = request["json"]
    assert [(c["role"], [p["text"] for p in c["parts"]]) for c in body["contents"]] == [
        ("user", ["one"]), ("model", ["First answer."]), ("user", ["two"]),
        ("model", ["Second answer."]), ("user", ["three"])]
    assert body["systemInstruction"]["parts"] == [{"text": "You are Apsara."}]
    config = body["generationConfig"]
    assert config["temperature"] == 0.4 and config["topP"] == 0.9 and config["topK"] == 20
    assert config["maxOutputTokens"] == 500 and config["stopSequences"] == ["END"] and config["seed"] == 3
    assert config["thinkingConfig"] == {"thinking_level": "HIGH"}


def test_thinking_budget_for_2_5_models_and_never_both(chat, fake):
    new_conversation(chat, model="gemini-2.5-flash-lite", settings={"thinking_budget": 1024, "include_thoughts": True})
    send(chat, "hi")
    thinking = fake.last_body()["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinking_budget": 1024, "include_thoughts": True}
    assert fake.generate_requests()[-1]["model"] == "gemini-2.5-flash-lite"


def test_per_turn_model_override(chat, fake):
    new_conversation(chat)
    response = send(chat, "hard question", model="gemini-3.1-pro-preview")
    assert response.status_code == 201
    assert response.json["reply"]["model"] == "gemini-3.1-pro-preview"
    assert fake.generate_requests()[-1]["model"] == "gemini-3.1-pro-preview"
    assert chat.get(f"{API}/c1").json["model"] == "gemini-3.8-flash"  # the conversation keeps its model


def test_reply_fields_usage_and_thoughts(chat, fake):
    new_conversation(chat, settings={"include_thoughts": True})
    fake.push(Reply(parts=[{"text": "Let me think.", "thought": True}, "The answer."],
                    usage={"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 5,
                           "totalTokenCount": 15}))
    result = send(chat, "q").json
    reply = result["reply"]
    assert reply["status"] == "complete" and reply["finish_reason"] == "STOP"
    assert reply["usage"] == {"prompt_tokens": 7, "output_tokens": 3, "thought_tokens": 5, "total_tokens": 15}
    assert [p["type"] for p in reply["parts"]] == ["thought", "text"]
    assert reply["text"] == "The answer."
    assert all("thought_signature" not in p for p in reply["parts"])  # kept on disk, not shown
    assert result["user_message"]["text"] == "q" and "status" not in result["user_message"]
    conversation = chat.get(f"{API}/c1").json
    assert conversation["message_count"] == 2
    assert [m["id"] for m in conversation["messages"]] == [result["user_message"]["id"], reply["id"]]


def test_thought_signatures_go_back_unchanged(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=[{"text": "thinking", "thought": True}, "Answer one."]))
    send(chat, "first")
    first_sig = base64.b64encode(b"sig-1").decode()
    send(chat, "second")
    model_turn = fake.last_body()["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["thoughtSignature"] == first_sig
    assert model_turn["parts"][0]["thought"] is True


def test_streamed_signature_on_empty_final_chunk_is_kept(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=["Hello", " world", {"text": "", "thoughtSignature": "ZmluYWw="}]))
    response = send(chat, "hi", stream=True)
    events, _ = parse_sse(response.get_data(as_text=True))
    assert events[-1][2]["text"] == "Hello world"
    send(chat, "again")
    parts = fake.last_body()["contents"][1]["parts"]
    # the stream's first chunk was signed by the fake too; each signature stays on its own part
    assert [p.get("thoughtSignature") for p in parts] == [base64.b64encode(b"sig-1").decode(), "ZmluYWw="]
    assert "".join(p["text"] for p in parts) == "Hello world"


# -- streaming -----------------------------------------------------------------------
def test_stream_event_order_and_stored_reply_equals_deltas(chat, fake):
    new_conversation(chat, settings={"include_thoughts": True})
    fake.push(Reply(parts=[{"text": "Hmm.", "thought": True}, "The", " quick", " fox."]))
    response = send(chat, "tell me", stream=True)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events, _ = parse_sse(response.get_data(as_text=True))
    names = [e[0] for e in events]
    assert names == ["user_message", "reply_start", "thought", "delta", "delta", "delta", "done"]
    assert [e[1] for e in events] == list(range(1, len(events) + 1))
    deltas = "".join(e[2]["text"] for e in events if e[0] == "delta")
    done = events[-1][2]
    assert done["text"] == deltas == "The quick fox."
    assert events[1][2] == {"id": done["id"], "model": "gemini-3.8-flash"}
    stored = chat.get(f"{API}/c1").json["messages"]
    assert stored[0] == events[0][2] and stored[1]["text"] == deltas
    assert stored[1]["status"] == "complete"
    assert fake.generate_requests()[-1]["path"].endswith(":streamGenerateContent?alt=sse")


def test_consecutive_replies_share_one_connection_to_gemini(chat, fake):
    # Gemini frames a stream in chunks and keeps the connection open: a turn that
    # opened a connection of its own would pay a TLS handshake before every reply.
    new_conversation(chat)
    for text, stream in (("one", True), ("two", False), ("three", True)):
        response = send(chat, text, stream=stream)
        assert response.status_code == (200 if stream else 201)
        response.get_data()  # to the stream's end
    calls = fake.generate_requests()
    assert [call["method_name"] for call in calls] == ["streamGenerateContent", "generateContent",
                                                       "streamGenerateContent"]
    assert len({call["peer"] for call in calls}) == 1


@pytest.mark.parametrize("keep", [0, 2])
def test_the_fake_run_alone_keeps_only_its_last_requests(keep):
    # Every request body held lengthens the fake's collections: a bench's 500-turn histories
    # held by the hundred stalled its answers.
    from google import genai
    from google.genai import types

    fake = FakeGemini(keep_requests=keep).start()
    try:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url))
        for n in range(5):
            client.models.generate_content(model="gemini-3.8-flash", contents=f"question {n}")
        assert len(fake.requests) <= 2 * keep
        assert [r["json"]["contents"][0]["parts"][0]["text"] for r in fake.requests][-keep:] == \
            [f"question {n}" for n in range(5)][5 - keep:]
    finally:
        fake.stop()


def test_accept_header_asks_for_a_stream(chat):
    new_conversation(chat)
    response = chat.post(f"{API}/c1/messages", json={"text": "hi"}, headers={"Accept": "text/event-stream"})
    assert response.mimetype == "text/event-stream"
    assert "event: done" in response.get_data(as_text=True)
    explicit = chat.post(f"{API}/c1/messages", json={"text": "hi", "stream": False},
                         headers={"Accept": "text/event-stream"})
    assert explicit.status_code == 201 and explicit.is_json


def _read_events(response, until):
    """Read a streamed response chunk by chunk until `until(name)` is true."""
    seen = []
    iterator = iter(response.response)
    for chunk in iterator:
        text = chunk.decode()
        for block in text.split("\n\n"):
            if block.startswith("event: "):
                name = block.split("\n")[0].removeprefix("event: ")
                seen.append(name)
                if until(name):
                    return seen, iterator
            elif block.startswith(": ping"):
                seen.append("ping")
    return seen, iterator


def test_first_delta_arrives_before_gemini_finishes(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["first", " second", " third"], hold=gate))
    response = chat.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    seen, rest = _read_events(response, lambda name: name == "delta")
    assert seen[-1] == "delta"
    assert not gate.is_set()  # the fake is still holding the rest of its answer
    gate.set()
    tail = b"".join(rest).decode()
    assert "event: done" in tail and "first second third" in tail


def test_heartbeat_while_gemini_is_silent(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=["late"], delay_s=1.0))  # ping interval is 0.2 s in tests
    response = send(chat, "think hard", stream=True)
    events, pings = parse_sse(response.get_data(as_text=True))
    assert pings >= 2
    assert [e[0] for e in events] == ["user_message", "reply_start", "delta", "done"]


def test_client_gone_mid_stream_still_stores_the_reply(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["partial", " and", " the rest"], hold=gate))
    response = chat.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    _read_events(response, lambda name: name == "delta")
    response.close()  # the client goes away
    stored = chat.get(f"{API}/c1").json["messages"]
    assert stored[0]["text"] == "go" and stored[1]["status"] == "streaming"
    gate.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = chat.get(f"{API}/c1").json["messages"][1]
        if reply["status"] != "streaming":
            break
        time.sleep(0.05)
    assert reply["status"] == "complete" and reply["text"] == "partial and the rest"


def test_a_relay_closed_early_does_not_end_the_reply(chat_app, fake):
    """The reply is a job: closing the stream that started it stops the relay, not the reply."""
    client = chat_app.test_client()
    client.post(API, json={"id": "c1"})
    gate = threading.Event()
    fake.push(Reply(parts=["kept", " and the rest"], hold=gate))
    response = client.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    chunks = response.response
    first = b""
    while b"event: delta" not in first:
        first += next(chunks)
    response.close()
    gate.set()
    deadline = time.monotonic() + 5
    while (reply := client.get(f"{API}/c1").json["messages"][1])["status"] == "streaming":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert reply["status"] == "complete" and reply["text"] == "kept and the rest"


def test_a_dead_writers_streaming_reply_becomes_interrupted(chat, settings, fake, tmp_path):
    new_conversation(chat)
    send_and_settle(chat, "hello")
    store = chat.application.extensions["apsara"].store
    document = store.read("local", "c1")
    document["messages"][1].update(status="streaming", _writer={"pid": 2**22 + 7, "host": __import__("socket").gethostname(),
                                                                 "started": time.time()})
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert chat.get(f"{API}/c1").json["messages"][1]["status"] == "interrupted"  # shown at once
    assert send(chat, "next").status_code == 201  # not refused as "still being written"
    statuses = [m.get("status") for m in chat.get(f"{API}/c1").json["messages"]]
    assert statuses == [None, "interrupted", None, "complete"]


def test_a_writer_whose_pid_now_names_another_process_is_dead(chat, fake):
    # After a crash the pid is soon another process's (a reboot, a container restarted with
    # the same hostname): that process started later than the writer did.
    import os

    from apsara.conversations.writers import new_writer

    new_conversation(chat)
    send_and_settle(chat, "hello")
    store = chat.application.extensions["apsara"].store
    document = store.read("local", "c1")
    writer = new_writer()
    assert writer["pid"] == os.getpid() and writer["pid_start"]
    document["messages"][1].update(status="streaming", _writer=writer)
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert chat.get(f"{API}/c1").json["messages"][1]["status"] == "streaming"  # its writer lives
    boot, ticks = writer["pid_start"].rsplit(":", 1)
    document["messages"][1]["_writer"] = {**writer, "pid_start": f"{boot}:{int(ticks) - 1}"}  # the pid's earlier holder
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert chat.get(f"{API}/c1").json["messages"][1]["status"] == "interrupted"
    assert send(chat, "next").status_code == 201

def test_a_reply_recorded_interrupted_by_the_next_message_still_replays_to_its_end(chat, fake):
    # Its checkpointed events hold no final one: the next message ended it, not its writer.
    new_conversation(chat)
    send_and_settle(chat, "hello")
    store = chat.application.extensions["apsara"].store
    document = store.read("local", "c1")
    reply = document["messages"][1]
    reply.update(status="streaming", _events=[e for e in reply["_events"] if e[1] not in ("done", "error")],
                 _writer={"pid": 2**22 + 7, "host": __import__("socket").gethostname(), "started": time.time()})
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert send(chat, "next").status_code == 201
    response = chat.get(f"{API}/c1/messages/{reply['id']}/events")
    events, _ = parse_sse(response.get_data(as_text=True))
    assert [name for name, _, _ in events][0] == "reply_start" and events[-1][0] == "error"
    assert events[-1][2]["reply"]["status"] == "interrupted"
    assert events[-1][1] > events[-2][1]  # a new id, after the last one kept

def test_second_send_while_a_reply_streams_is_409(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    response = chat.post(f"{API}/c1/messages", json={"text": "first", "stream": True}, buffered=False)
    _read_events(response, lambda name: name == "delta")
    second = send(chat, "second")
    assert second.status_code == 409 and second.json["error"]["status"] == "ALREADY_EXISTS"
    gate.set()
    b"".join(response.response)
    assert send(chat, "second").status_code == 201


# -- failures ------------------------------------------------------------------------
def test_missing_key_is_503_naming_the_variable_and_stores_nothing(client):
    client.post(API, json={"id": "c1"})
    response = send(client, "hello")
    assert response.status_code == 503
    assert "'gemini'" in response.json["error"]["message"]
    assert client.get(f"{API}/c1").json["messages"] == []


def test_unavailable_model_is_422_and_stores_nothing(chat, fake):
    new_conversation(chat)
    response = send(chat, "hi", model="gemini-1.5-pro")
    assert response.status_code == 422
    assert "gemini-3.8-flash" in response.json["error"]["message"]
    assert chat.get(f"{API}/c1").json["messages"] == []
    assert fake.generate_requests() == []


def test_unknown_conversation_and_bad_bodies(chat):
    assert send(chat, "hi").status_code == 404
    new_conversation(chat)
    for body in ({}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x", "stream": "yes"},
                 {"text": "x", "bogus": 1}, {"text": "x", "tools": ["nope"]}):
        response = chat.post(f"{API}/c1/messages", json=body)
        assert response.status_code == 422, body
    assert chat.get(f"{API}/c1").json["messages"] == []


def test_unknown_file_id_is_404_and_stores_nothing(chat):
    new_conversation(chat)
    response = chat.post(f"{API}/c1/messages", json={"text": "see file", "files": ["nope"]})
    assert response.status_code == 404
    assert chat.get(f"{API}/c1").json["messages"] == []


@pytest.mark.parametrize("reply, status, name", [
    (Reply(error=(429, "Resource has been exhausted"), retry_after="17"), 429, "RESOURCE_EXHAUSTED"),
    (Reply(error=(500, "Internal error encountered.")), 502, "UPSTREAM_ERROR"),
    (Reply(error=(503, "The model is overloaded.")), 503, "UNAVAILABLE"),
    (Reply(error=(400, "temperature must be <= 2", "INVALID_ARGUMENT")), 422, "UNPROCESSABLE"),
])
def test_upstream_errors_without_streaming(chat, fake, reply, status, name):
    new_conversation(chat)
    fake.push(reply)
    response = send(chat, "hello")
    assert response.status_code == status
    body = response.json
    assert body["error"]["status"] == name and reply.error[1] in body["error"]["message"]
    assert body["user_message"]["text"] == "hello"
    assert body["reply"]["status"] == "error" and body["reply"]["error"]["code"] == status
    if status == 429:
        assert response.headers["Retry-After"] == "17"
    stored = chat.get(f"{API}/c1").json["messages"]
    assert [m.get("status") for m in stored] == [None, "error"]
    assert "test-key-123" not in response.get_data(as_text=True)


def test_upstream_error_in_a_stream(chat, fake):
    new_conversation(chat)
    fake.push(Reply(error=(429, "quota"), retry_after="5"))
    events, _ = parse_sse(send(chat, "hello", stream=True).get_data(as_text=True))
    assert [e[0] for e in events] == ["user_message", "reply_start", "error"]
    assert events[-1][2]["error"]["code"] == 429 and events[-1][2]["reply"]["status"] == "error"


def test_mid_stream_failure_keeps_the_partial_reply(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=["Half", " an", " answer"], fail_after=2))
    events, _ = parse_sse(send(chat, "hello", stream=True).get_data(as_text=True))
    assert [e[0] for e in events] == ["user_message", "reply_start", "delta", "delta", "error"]
    error = events[-1][2]
    assert error["error"]["status"] == "UPSTREAM_ERROR"
    assert error["reply"]["status"] == "error" and error["reply"]["text"] == "Half an"
    stored = chat.get(f"{API}/c1").json["messages"][1]
    assert stored["status"] == "error" and stored["text"] == "Half an"


def test_timeout_is_504(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, gemini_timeout_s=0.3))
    client = app.test_client()
    client.post(API, json={"id": "c1"})
    fake.push(Reply(parts=["too late"], delay_s=1.5))
    response = send(client, "hello")
    assert response.status_code == 504 and response.json["error"]["status"] == "DEADLINE_EXCEEDED"


def test_unreachable_gemini_is_503(tmp_path):
    from tests.servers import free_port

    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=f"http://127.0.0.1:{free_port()}"))
    client = app.test_client()
    client.post(API, json={"id": "c1"})
    response = send(client, "hello")
    assert response.status_code == 503 and response.json["reply"]["status"] == "error"


def test_rejected_key_is_502_without_the_key(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key=BAD_KEY, gemini_base_url=fake.url))
    client = app.test_client()
    client.post(API, json={"id": "c1"})
    response = send(client, "hello")
    assert response.status_code == 502
    assert "API key" in response.json["error"]["message"]
    assert BAD_KEY not in response.get_data(as_text=True)


def test_retries_before_the_first_byte(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, gemini_retry_attempts=3))
    client = app.test_client()
    client.post(API, json={"id": "c1"})
    fake.push(Reply(error=(503, "overloaded")), Reply(parts=["made it"]))
    response = send(client, "hello")
    assert response.status_code == 201 and response.json["reply"]["text"] == "made it"
    assert len(fake.generate_requests()) == 2


def test_failed_and_blocked_replies_are_never_context(chat, fake):
    new_conversation(chat)
    fake.push(Reply(error=(500, "boom")), Reply(block_reason="SAFETY"),
              Reply(parts=[], finish_reason="MAX_TOKENS"), Reply(parts=["ok"]))
    assert send(chat, "one").status_code == 502
    blocked = send(chat, "two")
    assert blocked.status_code == 201
    assert blocked.json["reply"]["status"] == "blocked" and blocked.json["reply"]["finish_reason"] == "SAFETY"
    assert blocked.json["reply"]["text"] == ""
    empty = send(chat, "three")  # thinking used the whole budget: stored, empty, and says why
    assert empty.status_code == 201 and empty.json["reply"]["text"] == ""
    assert empty.json["reply"]["finish_reason"] == "MAX_TOKENS"
    send(chat, "four")
    contents = fake.last_body()["contents"]
    # user turns stay as context (merged into one), failed/blocked/empty replies do not
    assert len(contents) == 1 and contents[0]["role"] == "user"
    assert [p["text"] for p in contents[0]["parts"]] == ["one", "two", "three", "four"]


def test_safety_stop_carries_ratings(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=[], finish_reason="SAFETY",
                    safety_ratings=[{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                                     "blocked": True}]))
    reply = send(chat, "bad").json["reply"]
    assert reply["status"] == "blocked" and reply["finish_reason"] == "SAFETY"
    assert reply["safety_ratings"][0]["category"] == "HARM_CATEGORY_DANGEROUS_CONTENT"
