"""A Gemini stream that ends without a finish reason was cut, not finished."""
from __future__ import annotations

from apsara.testing.fake_gemini import Reply
from tests.conftest import parse_sse

API = "/api/v1/conversations"


def start(client):
    assert client.post(API, json={"id": "c1"}).status_code == 201


def stream(client, text):
    response = client.post(f"{API}/c1/messages", json={"text": text, "stream": True})
    assert response.status_code == 200
    return parse_sse(response.get_data(as_text=True))[0]


def test_a_cut_stream_is_stored_interrupted_with_an_error_event(chat, fake):
    start(chat)
    fake.push(Reply(parts=["Once", " upon", " a"], finish_reason=None))
    events = stream(chat, "Tell me a story")
    assert [d["text"] for n, _, d in events if n == "delta"] == ["Once", " upon", " a"]
    name, _, data = events[-1]
    assert name == "error" and data["error"]["code"] == 502
    assert data["reply"]["status"] == "interrupted" and data["reply"]["text"] == "Once upon a"
    stored = chat.get(f"{API}/c1").json["messages"][-1]
    assert stored["status"] == "interrupted" and stored["text"] == "Once upon a"
    assert stored["error"]["status"] == "UPSTREAM_ERROR"
    # Never context: the next turn sends the user messages only.
    stream(chat, "Go on")
    contents = fake.last_body()["contents"]
    assert [c["role"] for c in contents] == ["user"]
    assert len(fake.generate_requests()) == 2  # what had been shown was not asked for again


def test_a_stream_cut_before_any_output_is_asked_for_again(chat, fake):
    start(chat)
    fake.push(Reply(parts=[], finish_reason=None), Reply(parts=["All", " there."]))
    events = stream(chat, "Hello")
    assert events[-1][0] == "done" and events[-1][2]["text"] == "All there."
    assert events[-1][2]["status"] == "complete"
    assert len(fake.generate_requests()) == 2


def test_a_stream_cut_twice_before_any_output_is_an_interrupted_reply(chat, fake):
    start(chat)
    fake.push(Reply(parts=[], finish_reason=None), Reply(parts=[], finish_reason=None))
    events = stream(chat, "Hello")
    assert events[-1][0] == "error" and events[-1][2]["reply"]["status"] == "interrupted"
    assert len(fake.generate_requests()) == 2
