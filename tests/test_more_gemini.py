"""Structured output, safety settings, token counts, the over-limit refusal, one-shot generate."""
from __future__ import annotations

import pytest

from apsara import create_app
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings, parse_sse
from tests.test_files import png_bytes, upload

API = "/api/v1/conversations"
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}


def start(client, **fields):
    response = client.post(API, json={"id": "c1", **fields})
    assert response.status_code == 201, response.json
    return response.json


def send(client, text, **extra):
    return client.post(f"{API}/c1/messages", json={"text": text, **extra})


# -- structured output -----------------------------------------------------------------
def test_json_output_is_sent_stored_and_parsed(chat, fake):
    start(chat, settings={"response_mime_type": "application/json", "response_schema": PERSON})
    fake.push(Reply(parts=['{"name": "Ada", ', '"age": 36}']))
    reply = send(chat, "Who wrote the first program?").json["reply"]
    config = fake.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"].lower() == "object" and set(schema["properties"]) == {"name", "age"}
    assert schema["required"] == ["name"]
    assert reply["text"] == '{"name": "Ada", "age": 36}'
    assert reply["parsed"] == {"name": "Ada", "age": 36}
    assert chat.get(f"{API}/c1").json["messages"][1]["parsed"] == {"name": "Ada", "age": 36}


def test_unparseable_json_reply_is_kept_as_text(chat, fake):
    start(chat, settings={"response_mime_type": "application/json"})
    fake.push(Reply(parts=["not json"]))
    reply = send(chat, "x").json["reply"]
    assert reply["text"] == "not json" and "parsed" not in reply


def test_enum_output(chat, fake):
    schema = {"type": "string", "enum": ["positive", "negative"]}
    start(chat, settings={"response_mime_type": "text/x.enum", "response_schema": schema})
    fake.push(Reply(parts=["positive"]))
    assert send(chat, "I love it").json["reply"]["text"] == "positive"
    assert fake.last_body()["generationConfig"]["responseMimeType"] == "text/x.enum"


def test_per_turn_settings_apply_to_that_turn_only(chat, fake):
    start(chat, settings={"temperature": 0.2})
    send(chat, "as json", settings={"response_mime_type": "application/json", "temperature": None})
    config = fake.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "temperature" not in config
    send(chat, "plain")
    config = fake.last_body()["generationConfig"]
    assert "responseMimeType" not in config and config["temperature"] == 0.2
    assert chat.get(f"{API}/c1").json["settings"] == {"temperature": 0.2}


@pytest.mark.parametrize("settings, path", [
    ({"response_mime_type": "application/json", "response_schema": {"type": "int"}},
     "settings.response_schema.type"),
    ({"response_mime_type": "application/json",
      "response_schema": {"type": "object", "properties": {"age": {"type": "decimal"}}}},
     "settings.response_schema.properties.age.type"),
    ({"response_mime_type": "application/json",
      "response_schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}},
     "settings.response_schema.required"),
    ({"response_mime_type": "application/json", "response_schema": {"type": "array"}},
     "settings.response_schema.items"),
    ({"response_mime_type": "application/json", "response_schema": {"type": "string", "bogus": 1}},
     "settings.response_schema.bogus"),
    ({"response_mime_type": "application/json",
      "response_schema": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": 5}}}}},
     "settings.response_schema.properties.tags.items.type"),
    ({"response_schema": {"type": "string"}}, "settings.response_mime_type"),
    ({"response_mime_type": "text/x.enum"}, "settings.response_schema"),
    ({"response_mime_type": "text/html"}, "settings.response_mime_type"),
    ({"response_schema": "not an object"}, "settings.response_schema"),
    ({"safety_settings": [{"category": "HARM_CATEGORY_RUDENESS", "threshold": "BLOCK_NONE"}]},
     "settings.safety_settings.0.category"),
    ({"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_SOME"}]},
     "settings.safety_settings.0.threshold"),
    ({"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT"}]}, "settings.safety_settings.0.threshold"),
])
def test_bad_output_and_safety_settings_are_422_with_the_path(chat, fake, settings, path):
    response = chat.post(API, json={"id": "c1", "settings": settings})
    assert response.status_code == 422, response.json
    assert path in response.json["error"]["details"], response.json["error"]["details"]
    assert chat.get(API).json["conversations"] == []
    start(chat)
    turn = send(chat, "x", settings=settings)
    assert turn.status_code == 422 and path in turn.json["error"]["details"]
    assert chat.get(f"{API}/c1").json["messages"] == [] and fake.generate_requests() == []


def test_safety_settings_are_sent(chat, fake):
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
              {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_LOW_AND_ABOVE"}]
    start(chat, settings={"safety_settings": safety})
    send(chat, "hello")
    assert fake.last_body()["safetySettings"] == safety


# -- tokens ----------------------------------------------------------------------------
def test_token_count_of_the_next_turn(chat, fake):
    start(chat, system_instruction="Be brief and kind")
    assert chat.get(f"{API}/c1/tokens").json == {"model": "gemini-3.8-flash", "total_tokens": 4,
                                                 "input_token_limit": 1048576}
    send(chat, "one two three")
    image = upload(chat, png_bytes(), "p.png").json
    send(chat, "and four", files=[image["id"]])
    counted = chat.get(f"{API}/c1/tokens").json
    # the fake counts words, plus 258 for each file: the file is counted too
    body = [r for r in fake.requests if r["method_name"] == "countTokens"][-1]["json"]
    assert counted["total_tokens"] > 258
    assert any("inlineData" in p or "fileData" in p or "inline_data" in p or "file_data" in p
               for c in body["contents"] for p in c["parts"])


def test_tokens_errors(chat, client):
    assert chat.get(f"{API}/nope/tokens").status_code == 404
    client.post(API, json={"id": "c1"})
    assert client.get(f"{API}/c1/tokens").status_code == 503  # no key


def test_over_the_input_limit_is_refused_before_calling_gemini(tmp_path, fake):
    fake.models = [{"name": "models/gemini-3.8-flash", "displayName": "Flash", "inputTokenLimit": 40,
                    "outputTokenLimit": 100, "supportedGenerationMethods": ["generateContent"]}]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    start(client)
    assert send(client, "short question").status_code == 201
    response = send(client, "word " * 60)
    assert response.status_code == 422
    message = response.json["error"]["message"]
    assert "over the input limit" in message and "by " in message
    assert len(fake.generate_requests()) == 1
    assert len(client.get(f"{API}/c1").json["messages"]) == 2  # nothing stored


# -- one-shot generate -------------------------------------------------------------------
def test_generate_without_streaming_stores_nothing(chat, fake, settings):
    response = chat.post("/api/v1/generate", json={
        "text": "Write a haiku", "system_instruction": "You are a poet", "model": "gemini-3.7-flash",
        "settings": {"temperature": 0.9}})
    assert response.status_code == 200
    reply = response.json["reply"]
    assert reply["status"] == "complete" and reply["text"] == "Echo: Write a haiku"
    assert reply["model"] == "gemini-3.7-flash"
    body = fake.last_body()
    assert body["systemInstruction"]["parts"] == [{"text": "You are a poet"}]
    assert body["generationConfig"]["temperature"] == 0.9
    assert fake.generate_requests()[-1]["model"] == "gemini-3.7-flash"
    assert not list((settings.data_dir / "history").rglob("*.json"))


def test_generate_streams(chat, fake):
    fake.push(Reply(parts=["one", " two"]))
    response = chat.post("/api/v1/generate", json={"text": "count", "stream": True})
    events, _ = parse_sse(response.get_data(as_text=True))
    assert [e[0] for e in events] == ["reply_start", "delta", "delta", "done"]
    assert events[-1][2]["text"] == "one two"


def test_generate_with_tools_files_and_json(chat, fake):
    image = upload(chat, png_bytes(), "p.png").json
    fake.push(Reply(parts=['{"colour": "red"}']))
    response = chat.post("/api/v1/generate", json={
        "text": "Colour?", "files": [image["id"]], "tools": ["code_execution"],
        "settings": {"response_mime_type": "application/json"}})
    assert response.json["reply"]["parsed"] == {"colour": "red"}
    body = fake.last_body()
    assert body["tools"] == [{"codeExecution": {}}]
    assert any("inlineData" in p for p in body["contents"][0]["parts"])


@pytest.mark.parametrize("body, status", [
    ({}, 422), ({"text": ""}, 422), ({"text": "x", "model": "gemini-1.0-pro"}, 422),
    ({"text": "x", "tools": ["teleport"]}, 422), ({"text": "x", "files": ["fNOPE"]}, 404),
    ({"text": "x", "bogus": True}, 422),
    ({"text": "x", "model": "gemini-3.1-flash-image", "tools": ["code_execution"]}, 422),
])
def test_generate_validation(chat, fake, body, status):
    assert chat.post("/api/v1/generate", json=body).status_code == status
    assert fake.generate_requests() == []


def test_generate_upstream_error(chat, fake):
    fake.push(Reply(error=(429, "quota"), retry_after="3"))
    response = chat.post("/api/v1/generate", json={"text": "x"})
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json["reply"]["status"] == "error"


def test_generate_needs_a_key(client):
    assert client.post("/api/v1/generate", json={"text": "x"}).status_code == 503
