"""Shapes of real Gemini answers that no recording here holds, scripted on the wire fake.

Gemini 3 signs only the first of parallel function calls, signs generated
images, and may send grounding chunks without a title. Each signature must go
back on its own part, unchanged, and an unsigned part must go back unsigned.
"""
from __future__ import annotations

import base64

from apsara.testing.fake_gemini import Reply
from tests.test_tools import image_part

API = "/api/v1/conversations"
FIRST = base64.b64encode(b"signature of the first call").decode()
PICTURE = base64.b64encode(b"signature of the picture").decode()


def start(client, **fields):
    assert client.post(API, json={"id": "c1", **fields}).status_code == 201


def send(client, text):
    response = client.post(f"{API}/c1/messages", json={"text": text})
    assert response.status_code == 201, response.json
    return response.json["reply"]


def test_only_the_first_of_parallel_calls_is_signed_and_both_go_back_so(chat, fake):
    start(chat, model="gemini-3.1-pro-preview", tools=["get_current_time", "calculator"])
    calls = [{"functionCall": {"name": "calculator", "args": {"expression": "2+2"}}, "thoughtSignature": FIRST},
             {"functionCall": {"name": "get_current_time", "args": {"timezone": "UTC"}}}]
    fake.push(Reply(parts=calls, sign=False), Reply(parts=["Four, at noon."], sign=False))
    reply = send(chat, "What is 2+2, and what time is it?")
    assert [p["type"] for p in reply["parts"]] == ["function_call", "function_call", "function_response",
                                                   "function_response", "text"]
    follow_up = fake.generate_requests()[1]["json"]["contents"]
    model_turn = follow_up[1]["parts"]
    assert model_turn[0]["thoughtSignature"] == FIRST.replace("+", "-").replace("/", "_")
    assert "thoughtSignature" not in model_turn[1]
    assert [p["functionResponse"]["name"] for p in follow_up[2]["parts"]] == ["calculator", "get_current_time"]
    # Next turn: the same, from storage.
    fake.push(Reply(parts=["ok"], sign=False))
    send(chat, "thanks")
    model_turn = fake.last_body()["contents"][1]["parts"]
    signed = [base64.urlsafe_b64decode(p["thoughtSignature"]) for p in model_turn if "thoughtSignature" in p]
    assert signed == [base64.b64decode(FIRST)]


def test_a_signed_picture_keeps_its_signature_next_turn(chat, fake):
    start(chat, model="gemini-3.1-flash-image")
    fake.push(Reply(parts=["A red square.", {**image_part(), "thoughtSignature": PICTURE}], sign=False))
    reply = send(chat, "Draw a red square")
    assert [p["type"] for p in reply["parts"]] == ["text", "file"]
    assert all("thought_signature" not in p for p in reply["parts"])
    fake.push(Reply(parts=["Done."], sign=False))
    send(chat, "Make it blue")
    model_turn = fake.last_body()["contents"][1]["parts"]
    picture = next(p for p in model_turn if "inlineData" in p or "fileData" in p)
    assert base64.urlsafe_b64decode(picture["thoughtSignature"]) == base64.b64decode(PICTURE)
    assert "thoughtSignature" not in model_turn[0]


def test_grounding_chunks_without_a_title(chat, fake):
    start(chat, tools=["google_search"])
    grounding = {"webSearchQueries": ["kyoto weather"],
                 "groundingChunks": [{"web": {"uri": "https://example.org/kyoto", "domain": "example.org"}},
                                     {"web": {"uri": "https://example.net/weather"}}]}
    fake.push(Reply(parts=["Sunny."], grounding=grounding))
    reply = send(chat, "Weather in Kyoto?")
    assert reply["grounding"] == {"queries": ["kyoto weather"], "sources": [
        {"uri": "https://example.org/kyoto", "title": "example.org"},
        {"uri": "https://example.net/weather", "title": "https://example.net/weather"}]}


def test_a_lone_surrogate_from_gemini_never_cuts_the_stream(chat, fake):
    start(chat)
    fake.push(Reply(parts=["broken \ud800", " text"]))
    response = chat.post(f"{API}/c1/messages", json={"text": "hi", "stream": True})
    from tests.conftest import parse_sse

    events, _ = parse_sse(response.get_data(as_text=True))
    assert events[-1][0] == "done" and events[-1][2]["text"] == "broken \ufffd text"
    assert chat.get(f"{API}/c1").json["messages"][-1]["status"] == "complete"
