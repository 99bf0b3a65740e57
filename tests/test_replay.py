"""Real Gemini answers, replayed byte for byte to the real SDK through the real server.

Every recording in tests/fixtures/real-gemini/ (recorded from the live API by
other public projects; sources in the README there) is served by
apsara/testing/replay.py over real HTTP. Each test checks what a client sees
(the stored reply, the events) and what the service sends Gemini on the next
turn (thought signatures echoed unchanged, nothing failed sent as context).
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from apsara import create_app
from apsara.testing.replay import ReplayGemini, load_recordings, recorded_call, sse_events
from tests.conftest import make_settings, parse_sse

FIXTURES = Path(__file__).parent / "fixtures" / "real-gemini"
API = "/api/v1/conversations"
RECORDINGS = load_recordings(FIXTURES)


@pytest.fixture
def replay():
    server = ReplayGemini(FIXTURES).start()
    yield server
    server.stop()
    assert server.unexpected == [], server.unexpected
    assert not server.queue, f"recordings never asked for: {list(server.queue)}"


@pytest.fixture
def app(tmp_path, replay):
    return create_app(make_settings(tmp_path, gemini_api_key="test-key-123", gemini_base_url=replay.url))


@pytest.fixture
def client(app):
    return app.test_client()


def recording(prefix: str) -> dict:
    return next(r for name, r in RECORDINGS.items() if name.startswith(f"{prefix}-"))


def signature(prefix: str, index: int = 0) -> bytes:
    """The index-th thoughtSignature Gemini sent in a recording, as bytes."""
    response = recording(prefix)["response"]
    if "raw_body" in response and response.get("content_type", "").startswith("text/event-stream"):
        chunks = [json.loads(e.split(b"data: ", 1)[1]) for e in sse_events(response)]
    else:
        chunks = [response["body"]]
    found = [p["thoughtSignature"] for c in chunks for cand in c.get("candidates", [])
             for p in cand.get("content", {}).get("parts", []) if "thoughtSignature" in p]
    return base64.b64decode(found[index])


def sent_signatures(body: dict) -> list[bytes]:
    """Every thought signature in a request the SDK sent (it writes URL-safe base64)."""
    return [base64.urlsafe_b64decode(p["thoughtSignature"]) for c in body["contents"] for p in c["parts"]
            if "thoughtSignature" in p]


def start(client, model: str | None = None, **fields) -> None:
    body = {"id": "c1", **({"model": model} if model else {}), **fields}
    response = client.post(API, json=body)
    assert response.status_code == 201, response.json


def send(client, text="Hello", **extra):
    return client.post(f"{API}/c1/messages", json={"text": text, **extra})


def send_streamed(client, text="Hello", **extra):
    response = send(client, text, stream=True, **extra)
    assert response.status_code == 200
    events, _ = parse_sse(response.get_data(as_text=True))
    return events


def stored_reply(client) -> dict:
    return client.get(f"{API}/c1").json["messages"][-1]


def test_every_recording_is_replayed_by_a_test():
    """The suite covers the whole folder: a new recording needs a test here."""
    covered = {"01", "03", "04", "05", "07", "12", "14", "15", "17", "21", "23", "24", "26", "30", "33", "34"}
    assert {name.split("-", 1)[0] for name in RECORDINGS} == covered


def test_replay_serves_recorded_bytes_and_framing(replay):
    """The replay's bytes are the recording's bytes: the SSE separator Gemini used included."""
    import urllib.request

    replay.push("01")
    request = urllib.request.Request(f"{replay.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                     data=b"{}", method="POST")
    with urllib.request.urlopen(request) as response:
        raw = response.read()
        assert response.headers["Content-Type"] == "text/event-stream"
    assert raw == recording("01")["response"]["raw_body"].encode()
    assert raw.count(b"\r\n\r\n") == 3


# -- streams --------------------------------------------------------------------------------
def test_plain_text_stream_and_usage_from_the_final_chunk(client, replay):
    start(client, "gemini-2.5-flash")
    replay.push("01")
    events = send_streamed(client, "Count from 1 to 30")
    names = [name for name, _, _ in events]
    assert names[:2] == ["user_message", "reply_start"] and names[-1] == "done"
    deltas = "".join(data["text"] for name, _, data in events if name == "delta")
    expected = "\n".join(str(n) for n in range(1, 31))
    assert deltas == expected
    done = events[-1][2]
    assert done["text"] == expected and done["status"] == "complete" and done["finish_reason"] == "STOP"
    # The last chunk's counts, not the first's.
    assert done["usage"] == {"prompt_tokens": 18, "output_tokens": 80, "thought_tokens": 35, "total_tokens": 133}
    assert stored_reply(client) == {**done, "siblings": done["siblings"]}
    replay.push("01")
    send_streamed(client, "Again")
    history = replay.generate_requests()[-1]["json"]["contents"]
    assert [c["role"] for c in history] == ["user", "model", "user"]
    assert "".join(p["text"] for p in history[1]["parts"]) == expected


def test_thought_summaries_stream_as_thoughts_never_as_text(client, replay):
    start(client, "gemini-2.5-pro", settings={"include_thoughts": True})
    replay.push("03")
    events = send_streamed(client, "How do I cross the street?")
    thoughts = [data["text"] for name, _, data in events if name == "thought"]
    assert len(thoughts) == 4 and thoughts[0].startswith("**Clarifying User Goals**")
    done = events[-1][2]
    assert done["status"] == "complete"
    assert done["text"].startswith("This is a great question!") and "Clarifying" not in done["text"]
    assert "**Clarifying" not in "".join(d["text"] for n, _, d in events if n == "delta")
    assert [p["type"] for p in done["parts"]] == ["thought", "text"]
    assert all("thought_signature" not in p for p in done["parts"])
    assert done["usage"]["thought_tokens"] == 787 and done["usage"]["output_tokens"] == 469
    # Next turn: the signature that came on the first text chunk goes back on that text.
    replay.push("03")
    send_streamed(client, "Thanks")
    body = replay.generate_requests()[-1]["json"]
    assert sent_signatures(body) == [signature("03")]
    model_turn = body["contents"][1]
    signed = next(p for p in model_turn["parts"] if "thoughtSignature" in p)
    assert signed["text"].startswith("This is a great question!") and not signed.get("thought")


def test_function_call_signature_goes_back_on_the_call(client, replay):
    """Gemini 3 calls a function with a signature and no id; the service's follow-up
    request must carry the call back with that signature, and the result."""
    start(client, "gemini-3-pro-preview", tools=["get_current_time"])
    replay.push("04", "05")
    events = send_streamed(client, "What is the capital of the user country? Call the tool")
    names = [name for name, _, _ in events]
    assert names[-1] == "done", events[-1]
    parts = [data for name, _, data in events if name == "part"]
    assert parts[0] == {"type": "function_call", "name": "get_country", "args": {}}
    assert parts[1]["type"] == "function_response" and parts[1]["name"] == "get_country"
    assert "error" in parts[1]["response"]  # not a function this server has
    follow_up = replay.generate_requests()[1]["json"]
    call_turn = follow_up["contents"][1]
    assert call_turn["role"] == "model"
    assert call_turn["parts"][0]["functionCall"]["name"] == "get_country"
    assert "id" not in call_turn["parts"][0]["functionCall"]
    assert base64.urlsafe_b64decode(call_turn["parts"][0]["thoughtSignature"]) == signature("04")
    result_turn = follow_up["contents"][2]
    assert result_turn["role"] == "user" and "id" not in result_turn["parts"][0]["functionResponse"]
    done = events[-1][2]
    assert done["text"] == "The capital of Mexico is Mexico City."
    assert [p["type"] for p in done["parts"]] == ["function_call", "function_response", "text"]
    # The final chunk's promptTokenCount (257) differs from the earlier ones (55): the last wins.
    assert done["usage"]["prompt_tokens"] == 257 and done["usage"]["total_tokens"] == 265
    # And on the next turn the whole exchange goes back, signature included.
    replay.push("05")
    send_streamed(client, "And its population?")
    assert sent_signatures(replay.generate_requests()[-1]["json"]) == [signature("04")]


def test_code_execution_and_a_signature_on_an_empty_final_text_part(client, replay):
    start(client, "gemini-3-flash-preview", tools=["code_execution"],
          system_instruction="Be concise and always use Python to do calculations no matter how small.")
    replay.push("07")
    events = send_streamed(client, "what is 65465-6544 * 65464-6+1.02255")
    assert events[-1][0] == "done"
    parts = [data for name, _, data in events if name == "part"]
    assert parts[0]["type"] == "code" and parts[0]["language"] == "python"
    assert "65465 - 6544 * 65464" in parts[0]["code"]
    assert parts[1] == {"type": "code_result", "outcome": "OUTCOME_OK", "output": "-428330955.97745\n"}
    done = events[-1][2]
    assert done["text"] == "The result of $65465 - 6544 \\times 65464 - 6 + 1.02255$ is **-428,330,955.97745**."
    replay.push("07")
    send_streamed(client, "Show the code again")
    body = replay.generate_requests()[-1]["json"]
    # Both signatures go back: the one on the code and the one on the empty final text part.
    assert sent_signatures(body) == [signature("07", 0), signature("07", 1)]
    model_parts = body["contents"][1]["parts"]
    assert model_parts[-1] == {"text": "", "thoughtSignature": model_parts[-1]["thoughtSignature"]}


# -- whole answers ---------------------------------------------------------------------------
def test_signature_on_a_text_part_goes_back_next_turn(client, replay):
    start(client, "gemini-3.5-flash")
    replay.push("12")
    reply = send(client, "What is 2 + 2? Reply with just the number.").json["reply"]
    assert reply["text"] == "4" and reply["status"] == "complete"
    assert reply["usage"] == {"prompt_tokens": 15, "output_tokens": 1, "thought_tokens": 72, "total_tokens": 88}
    replay.push("12")
    send(client, "And 3 + 3?")
    body = replay.generate_requests()[-1]["json"]
    assert body["contents"][1]["parts"] == [{"text": "4", "thoughtSignature": body["contents"][1]["parts"][0]
                                             ["thoughtSignature"]}]
    assert sent_signatures(body) == [signature("12")]


def test_function_call_without_an_id_round_trip(client, replay):
    start(client, "gemini-2.5-flash", tools=["calculator"])
    replay.push("14", "15")
    response = send(client, "What's the weather in Paris?")
    assert response.status_code == 201, response.json
    reply = response.json["reply"]
    assert reply["text"] == "The weather in Paris is sunny with a temperature of 22C."
    call = reply["parts"][0]
    assert call == {"type": "function_call", "name": "get_weather", "args": {"city": "Paris"}}
    follow_up = replay.generate_requests()[1]["json"]
    assert sent_signatures(follow_up) == [signature("14")]
    assert follow_up["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_search_grounding(client, replay):
    start(client, "gemini-2.5-pro", tools=["google_search"], system_instruction="You are a helpful chatbot.")
    replay.push("17")
    reply = send(client, "What is the weather in San Francisco today?").json["reply"]
    assert reply["text"].startswith("## Weather in San Francisco")
    assert reply["grounding"]["queries"] == ["weather in San Francisco today"]
    sources = reply["grounding"]["sources"]
    assert [s["title"] for s in sources] == ["Weather information for San Francisco, CA, US", "weather.gov",
                                             "wunderground.com"]
    assert all(s["uri"].startswith("https://") for s in sources)
    assert replay.generate_requests()[0]["json"]["tools"] == [{"googleSearch": {}}]


def test_generated_image_is_stored_as_a_file(client, replay):
    start(client, "gemini-2.5-flash-image")
    replay.push("21")
    reply = send(client, "Generate an image of an axolotl.").json["reply"]
    assert reply["text"] == "Here's an image of an axolotl for you! "
    picture = next(p for p in reply["parts"] if p["type"] == "file")
    assert picture["mime_type"] == "image/png"
    content = client.get(picture["url"])
    recorded = next(p["inlineData"] for p in recording("21")["response"]["body"]["candidates"][0]["content"]["parts"]
                    if "inlineData" in p)
    assert content.data == base64.b64decode(recorded["data"])
    assert reply["usage"]["output_tokens"] == 1304
    assert replay.generate_requests()[0]["json"]["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]


def test_max_tokens_with_text_is_a_complete_reply(client, replay):
    start(client, "gemini-2.5-flash", system_instruction="You are a helpful chatbot.",
          settings={"max_output_tokens": 5, "thinking_budget": 0})
    replay.push("23")
    response = send(client, "What is the capital of France?")
    assert response.status_code == 201
    reply = response.json["reply"]
    assert reply["text"] == "The capital of France is"
    assert reply["status"] == "complete" and reply["finish_reason"] == "MAX_TOKENS"


def test_max_tokens_spent_on_thinking_is_an_empty_reply_not_an_error(client, replay):
    """All output went to thinking: a content with no parts. The client gets a stored,
    empty reply whose finish_reason says why, not a 502."""
    start(client, "gemini-2.5-pro", settings={"max_output_tokens": 5})
    replay.push("24")
    response = send(client, "What is the capital of France?")
    assert response.status_code == 201, response.json
    reply = response.json["reply"]
    assert reply["text"] == "" and reply["parts"] == []
    assert reply["status"] == "complete" and reply["finish_reason"] == "MAX_TOKENS"
    assert reply["usage"] == {"prompt_tokens": 15, "output_tokens": 0, "thought_tokens": 2, "total_tokens": 17}
    assert stored_reply(client)["finish_reason"] == "MAX_TOKENS"
    # An empty reply adds nothing to the next request.
    replay.push("23")
    client.patch(f"{API}/c1", json={"model": "gemini-2.5-flash", "settings": {"thinking_budget": 0}})
    send(client, "Try again")
    contents = replay.generate_requests()[-1]["json"]["contents"]
    assert all(c["role"] == "user" for c in contents)


def test_blocked_prompt_is_a_stored_blocked_reply(client, replay):
    start(client)  # the default model: the recording was made without its request
    replay.push("26")
    response = send(client, "something prohibited")
    assert response.status_code == 201, response.json
    reply = response.json["reply"]
    assert reply["status"] == "blocked" and reply["finish_reason"] == "PROHIBITED_CONTENT"
    assert reply["text"] == "" and reply["usage"]["prompt_tokens"] == 9
    replay.push("26")
    send(client, "something else")
    contents = replay.generate_requests()[-1]["json"]["contents"]
    assert [c["role"] for c in contents] == ["user"]  # the blocked reply is not context


# -- errors ----------------------------------------------------------------------------------
def test_rejected_key_is_502_and_never_leaks_the_key(client, replay):
    start(client)
    replay.push("30")
    response = send(client, "hi")
    assert response.status_code == 502
    body = response.get_data(as_text=True)
    assert "test-key-123" not in body
    assert response.json["error"]["status"] == "UPSTREAM_ERROR"
    assert "API key" in response.json["error"]["message"]
    assert response.json["reply"]["status"] == "error"


def test_quota_429_gives_retry_after_from_retry_info(client, replay):
    start(client)
    replay.push("33")
    response = send(client, "hi")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "58"
    error = response.json["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and error["details"]["retry_after"] == ["58"]
    assert "quota" in error["message"]


def test_quota_429_in_a_stream(client, replay):
    start(client)
    replay.push("33")
    events = send_streamed(client, "hi")
    name, _, data = events[-1]
    assert name == "error" and data["error"]["code"] == 429
    assert data["error"]["details"]["retry_after"] == ["58"]


# -- the live model list -----------------------------------------------------------------------
def test_live_model_list_offers_only_text_conversation_models(client, replay):
    body = client.get("/api/v1/models").json
    assert body["source"] == "live"
    ids = {m["id"] for m in body["models"]}
    recorded = [m["name"].removeprefix("models/")
                for m in json.loads(recording("34")["response"]["raw_body"])["models"]]
    for model_id in recorded:
        speech_music_or_other = any(word in model_id for word in (
            "tts", "lyria", "embedding", "imagen", "veo", "deep-research", "computer-use", "antigravity")) \
            or model_id == "aqa"
        if speech_music_or_other:
            assert model_id not in ids, model_id
    assert {"gemini-2.5-flash", "gemini-3-pro-preview", "gemini-3.6-flash", "gemini-3.1-flash-image"} <= ids
    assert "auto" in ids
    # The empty page after the recorded one ends the listing; it was asked for.
    pages = [r["path"] for r in replay.requests if r["method"] == "GET"]
    assert len(pages) == 2 and "pageToken=" in pages[1]


def test_default_model_falls_back_to_the_best_live_flash(client, replay, caplog):
    caplog.set_level(logging.WARNING, logger="apsara")
    models = client.get("/api/v1/models").json
    assert models["default"] == "gemini-3.6-flash"
    assert "gemini-3.8-flash" in models["default_note"]
    health = client.get("/health").json
    assert health["default_model"] == "gemini-3.6-flash" and "gemini-3.8-flash" in health["default_model_note"]
    start(client)
    assert client.get(f"{API}/c1").json["model"] == "gemini-3.6-flash"
    client.get("/api/v1/models")
    notes = [r for r in caplog.records if "gemini-3.8-flash" in r.getMessage()]
    assert len(notes) == 1  # said once, not on every request
    # A conversation that names the missing model is refused before Gemini is called.
    response = client.post(API, json={"id": "c2", "model": "gemini-3.8-flash"})
    assert response.status_code == 422
    assert replay.generate_requests() == []


def test_recorded_calls_name_their_model():
    """Sanity of the fixtures: every recorded request names a model and a method."""
    for name, rec in RECORDINGS.items():
        if rec["request"].get("body") is not None and not name.startswith("34"):
            model, method = recorded_call(rec)
            assert model and method in ("generateContent", "streamGenerateContent"), name
