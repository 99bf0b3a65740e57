"""The `auto` model: routed per turn, hard constraints first, visible and overridable."""
from __future__ import annotations

import pytest

from apsara import create_app
from apsara.gemini.catalog import BUNDLED
from apsara.routing.router import translate_thinking
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings, parse_sse
from tests.test_files import PDF, png_bytes, upload

API = "/api/v1/conversations"


def start(client, **fields):
    response = client.post(API, json={"id": "c1", "model": "auto", **fields})
    assert response.status_code == 201, response.json
    return response.json


def send(client, text, **extra):
    response = client.post(f"{API}/c1/messages", json={"text": text, **extra})
    assert response.status_code == 201, response.json
    return response.json["reply"]


def test_auto_is_listed_and_choosable(chat):
    models = {m["id"]: m for m in chat.get("/api/v1/models").json["models"]}
    assert "auto" in models and "image" in models["auto"]["outputs"]
    assert start(chat)["model"] == "auto"


@pytest.mark.parametrize("text, tier, model", [
    ("thanks!", "lite", "gemini-3.5-flash-lite"),
    ("write a friendly email inviting my team to lunch on friday", "flash", "gemini-3.8-flash"),
    ("prove that there are infinitely many primes and that their reciprocals diverge", "pro",
     "gemini-3.1-pro-preview"),
    ("draw a watercolor fox in a snowy forest", "image", "gemini-3.1-flash-image"),
])
def test_each_turn_is_routed_and_the_routing_stored(chat, fake, text, tier, model):
    start(chat)
    reply = send(chat, text)
    assert reply["model"] == model
    routing = reply["routing"]
    assert routing["tier"] == tier and routing["model"] == model
    assert routing["classifier"] == "local-logistic-v1" and routing["reason"] and routing["latency_ms"] >= 0
    assert fake.generate_requests()[-1]["model"] == model
    assert chat.get(f"{API}/c1").json["messages"][1]["routing"] == routing


def test_reply_start_carries_the_routing(chat, fake):
    start(chat)
    events, _ = parse_sse(chat.post(f"{API}/c1/messages", json={"text": "hello!", "stream": True})
                          .get_data(as_text=True))
    reply_start = events[1][2]
    assert reply_start["routing"]["tier"] == "lite"
    assert reply_start["model"] == reply_start["routing"]["model"] == events[-1][2]["model"]


def test_a_model_other_than_auto_overrides(chat, fake):
    start(chat)
    reply = send(chat, "thanks!", model="gemini-3.1-pro-preview")
    assert reply["model"] == "gemini-3.1-pro-preview" and "routing" not in reply


def test_follow_up_uses_the_conversation(chat, fake):
    start(chat)
    send(chat, "prove rigorously that the square root of 2 is irrational")
    assert send(chat, "why?")["routing"]["tier"] == "pro"
    assert send(chat, "thanks, great proof!")["routing"]["tier"] == "lite"


def test_an_image_the_image_model_cannot_read_moves_the_turn(chat, fake):
    pdf = upload(chat, PDF, "plan.pdf").json
    start(chat)
    reply = send(chat, "draw a picture of the floor plan in this pdf", files=[pdf["id"]])
    assert reply["routing"]["tier"] != "image" and reply["model"] == "gemini-3.8-flash"
    assert "image model" in reply["routing"]["reason"]


def test_image_request_with_a_photo_goes_to_the_image_model(chat, fake):
    photo = upload(chat, png_bytes(), "car.png").json
    start(chat)
    fake.push(Reply(parts=[{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]))
    reply = send(chat, "make this photo black and white", files=[photo["id"]])
    assert reply["routing"]["tier"] == "image" and reply["model"] == "gemini-3.1-flash-image"


def test_enabled_tools_move_the_turn_to_a_model_that_has_them(tmp_path, fake):
    # lite tier configured with a model that has no tools: a search turn moves up
    fake.models = fake.models + [{"name": "models/gemini-x-lite-audio", "displayName": "x",
                                  "inputTokenLimit": 100000, "outputTokenLimit": 100,
                                  "supportedGenerationMethods": ["generateContent"]}]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_tiers={"lite": ["gemini-x-lite-audio"]}))
    client = app.test_client()
    client.post(API, json={"id": "c1", "model": "auto"})
    assert send(client, "hi!")["model"] == "gemini-x-lite-audio"
    client.patch(f"{API}/c1", json={"tools": ["google_search"]})
    reply = send(client, "hi again!")
    assert reply["model"] == "gemini-3.8-flash" and "moved up" in reply["routing"]["reason"]
    assert "gemini-x-lite-audio cannot use google_search" in reply["routing"]["reason"]


def test_a_long_conversation_moves_past_a_small_context(tmp_path, fake):
    for model in fake.models:  # every lite model has a small context
        if "lite" in model["name"]:
            model["inputTokenLimit"] = 300
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    client.post(API, json={"id": "c1", "model": "auto"})
    assert send(client, "hello")["model"] == "gemini-3.5-flash-lite"
    send(client, "summarize this: " + "lorem ipsum dolor " * 400, model="gemini-3.8-flash")
    reply = send(client, "thanks!")
    assert reply["routing"]["tier"] != "lite" and reply["model"] == "gemini-3.8-flash"


def test_thinking_settings_are_translated(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_tiers={"lite": ["gemini-2.5-flash-lite"]}))
    client = app.test_client()
    client.post(API, json={"id": "c1", "model": "auto", "settings": {"thinking_level": "high"}})
    assert send(client, "thanks!")["model"] == "gemini-2.5-flash-lite"
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinking_budget": 24576}
    send(client, "prove that e is irrational, rigorously, step by step")
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinking_level": "HIGH"}
    send(client, "draw a cat")
    assert "thinkingConfig" not in fake.last_body()["generationConfig"]


def test_translate_thinking_rules():
    models = {m.id: m for m in BUNDLED}
    assert translate_thinking({"thinking_budget": 0}, models["gemini-3.8-flash"]) == {"thinking_level": "low"}
    assert translate_thinking({"thinking_level": "minimal"}, models["gemini-3.5-flash-lite"]) == \
        {"thinking_level": "minimal"}
    assert translate_thinking({"thinking_level": "minimal"}, models["gemini-2.5-pro"]) == {"thinking_budget": 512}
    assert translate_thinking({"thinking_budget": 99999}, models["gemini-2.5-flash-lite"]) == \
        {"thinking_budget": 24576}
    assert translate_thinking({"include_thoughts": True, "thinking_level": "low"},
                              models["gemini-3.1-flash-image"]) == {}


def test_route_endpoint(chat, fake):
    decision = chat.post("/api/v1/route", json={"text": "draw a lighthouse"}).json
    assert decision["tier"] == "image" and decision["model"] == "gemini-3.1-flash-image"
    assert set(decision) == {"model", "tier", "reason", "classifier", "latency_ms"}
    start(chat)
    send(chat, "derive the variance of the binomial distribution step by step")
    follow = chat.post("/api/v1/route", json={"text": "why?", "conversation_id": "c1"}).json
    assert follow["tier"] == "pro"
    assert len(chat.get(f"{API}/c1").json["messages"]) == 2  # nothing generated or stored
    assert len(fake.generate_requests()) == 1


@pytest.mark.parametrize("body, status", [({}, 422), ({"text": 5}, 422), ({"text": "x", "conversation_id": "nope"}, 404),
                                          ({"text": "x", "files": ["fNOPE"]}, 404), ({"text": "x", "extra": 1}, 422)])
def test_route_validation(chat, body, status):
    assert chat.post("/api/v1/route", json=body).status_code == status


# -- the optional LLM judge ----------------------------------------------------------------
@pytest.fixture
def judged(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_judge_model="gemini-3.5-flash-lite", auto_judge_timeout_s=0.3))
    client = app.test_client()
    client.post(API, json={"id": "c1", "model": "auto"})
    return client


def test_judge_decides_when_configured(judged, fake):
    fake.push(Reply(parts=["pro"]), Reply(parts=["Here is a careful answer."]))
    reply = send(judged, "thanks!")
    assert reply["routing"]["classifier"] == "llm-judge" and reply["routing"]["tier"] == "pro"
    assert reply["model"] == "gemini-3.1-pro-preview"
    judge_call = fake.generate_requests()[0]
    assert judge_call["model"] == "gemini-3.5-flash-lite"
    config = judge_call["json"]["generationConfig"]
    assert config["responseMimeType"] == "text/x.enum"
    assert config["responseSchema"]["enum"] == ["lite", "flash", "pro", "image"]
    assert "thanks!" in judge_call["json"]["contents"][0]["parts"][0]["text"]


@pytest.mark.parametrize("judge_reply", [
    Reply(error=(500, "judge down")), Reply(parts=["banana"]), Reply(parts=["pro"], delay_s=1.0)])
def test_judge_failure_falls_back_to_the_local_classifier(judged, fake, judge_reply):
    fake.push(judge_reply, Reply(parts=["You're welcome!"]))
    reply = send(judged, "thanks!")
    assert reply["routing"]["classifier"] == "local-logistic-v1" and reply["routing"]["tier"] == "lite"
    assert reply["status"] == "complete"


def test_a_judge_model_the_api_does_not_offer_is_never_asked(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_judge_model="gemini-0-gone", auto_judge_timeout_s=0.3))
    client = app.test_client()
    client.post(API, json={"id": "c1", "model": "auto"})
    reply = send(client, "thanks!")
    assert reply["routing"]["classifier"] == "local-logistic-v1"
    assert [r["model"] for r in fake.generate_requests()] == [reply["model"]]
