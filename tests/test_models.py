"""The model list: live from Gemini when reachable, the bundled table when not."""
from __future__ import annotations

import time

from apsara import create_app
from tests.conftest import make_settings

API = "/api/v1/models"


def _live(name, **extra):
    return {"name": f"models/{name}", "displayName": name.upper(), "description": "live",
            "inputTokenLimit": 1000, "outputTokenLimit": 100,
            "supportedGenerationMethods": ["generateContent"], **extra}


def test_live_list_decides_which_models_exist(tmp_path, fake):
    fake.models = [_live("gemini-3.8-flash"), _live("gemini-4.0-flash", thinking=True),
                   _live("gemini-2.5-flash-lite-preview-09", thinking=True),
                   _live("text-embedding-9", supportedGenerationMethods=["embedContent"]),
                   _live("gemini-4.0-flash-image")]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    body = client.get(API).json
    assert body["source"] == "live"
    models = {m["id"]: m for m in body["models"]}
    assert models.pop("auto")["display_name"] == "Automatic"
    assert set(models) == {"gemini-3.8-flash", "gemini-4.0-flash", "gemini-2.5-flash-lite-preview-09",
                           "gemini-4.0-flash-image"}
    # known: bundled facts, live limits
    assert models["gemini-3.8-flash"]["thinking"]["levels"] == ["low", "medium", "high"]
    assert models["gemini-3.8-flash"]["input_token_limit"] == 1000
    # unknown: live fields plus the family's defaults
    assert models["gemini-4.0-flash"]["display_name"] == "GEMINI-4.0-FLASH"
    assert models["gemini-4.0-flash"]["thinking"]["levels"] == ["low", "medium", "high"]
    assert "budget" in models["gemini-2.5-flash-lite-preview-09"]["thinking"]
    assert models["gemini-4.0-flash-image"]["outputs"] == ["text", "image"]
    # a model the live list lacks cannot be chosen, even if the bundled table has it
    response = client.post("/api/v1/conversations", json={"model": "gemini-3.1-pro-preview"})
    assert response.status_code == 422
    assert client.post("/api/v1/conversations", json={"model": "gemini-4.0-flash"}).status_code == 201


def test_list_is_cached(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    for _ in range(5):
        client.get(API)
    assert sum(1 for r in fake.requests if r["method"] == "GET") == 1


def test_an_old_list_is_served_while_the_new_one_is_read(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, models_cache_ttl_s=1.0))
    client = app.test_client()
    assert "gemini-9.9-flash" not in [m["id"] for m in client.get(API).json["models"]]
    fake.models = fake.models + [_live("gemini-9.9-flash")]
    time.sleep(1.1)
    listings = sum(1 for r in fake.requests if r["method"] == "GET")
    # out of date: this request is answered from the list in hand, the new one is read beside it
    assert "gemini-9.9-flash" not in [m["id"] for m in client.get(API).json["models"]]
    deadline = time.monotonic() + 10
    while "gemini-9.9-flash" not in [m["id"] for m in client.get(API).json["models"]]:
        assert time.monotonic() < deadline, "the list was never read again"
        time.sleep(0.02)
    assert sum(1 for r in fake.requests if r["method"] == "GET") == listings + 1  # once, not per request


def test_bundled_table_when_gemini_unreachable(tmp_path, fake, caplog):
    fake.list_error = (503, "down")
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    body = app.test_client().get(API).json
    assert body["source"] == "bundled"
    assert "gemini-3.8-flash" in [m["id"] for m in body["models"]]
    assert any("serving the bundled model table" in r.getMessage() for r in caplog.records)


def test_every_page_is_read(tmp_path, fake):
    # 100 per page (an empty last page is replayed from a real listing in test_replay.py)
    fake.models = [_live(f"gemini-3.{n}-flash-lite") for n in range(199)] + [_live("gemini-3.8-flash")]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    body = app.test_client().get(API).json
    assert body["source"] == "live" and len(body["models"]) == 201  # and auto
    pages = [r["path"] for r in fake.requests if r["method"] == "GET"]
    assert len(pages) == 2


def test_speech_and_music_models_are_not_chat_models(tmp_path, fake):
    fake.models = [_live("gemini-3.8-flash"), _live("gemini-3.1-flash-tts-preview"), _live("lyria-3-pro-preview"),
                   _live("gemini-2.5-pro-preview-tts"), _live("gemini-embedding-2"), _live("aqa"),
                   _live("deep-research-pro-preview-12-2025"), _live("gemini-2.5-computer-use-preview-10-2025"),
                   _live("antigravity-preview-05-2026")]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    ids = [m["id"] for m in app.test_client().get(API).json["models"]]
    assert ids == ["gemini-3.8-flash", "auto"]


def test_bundled_table_without_key(client):
    body = client.get(API).json
    assert body["source"] == "bundled" and body["default"] == "gemini-3.8-flash"
    image = next(m for m in body["models"] if m["id"] == "gemini-3.1-flash-image")
    assert image["outputs"] == ["text", "image"] and image["thinking"] is None


def test_default_falls_back_when_configured_default_is_gone(tmp_path, fake):
    fake.models = [_live("gemini-3.9-flash")]
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    assert client.get(API).json["default"] == "gemini-3.9-flash"
    assert client.post("/api/v1/conversations").json["model"] == "gemini-3.9-flash"
