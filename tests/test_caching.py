"""Explicit context caching: created once, reused, recreated on expiry or change, deleted with the conversation."""
from __future__ import annotations

import pytest

from apsara import create_app
from tests.conftest import make_settings
from tests.test_files import upload

API = "/api/v1/conversations"
BOOK = ("lorem ipsum dolor sit amet " * 400).encode()  # 2,000 words: above the 1,024-token minimum


@pytest.fixture
def cached(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    client.post(API, json={"id": "c1", "system_instruction": "Answer from the attached book only."})
    book = upload(client, BOOK, "book.txt").json
    return client, book


def send(client, text, **extra):
    response = client.post(f"{API}/c1/messages", json={"text": text, **extra})
    assert response.status_code == 201, response.json
    return response.json


def cache_creations(fake):
    return [r for r in fake.requests if r["path"].endswith("/cachedContents") and r["method"] == "POST"]


def test_cache_is_created_once_and_reused(cached, fake):
    client, book = cached
    send(client, "What is the book about?", files=[book["id"]])
    assert cache_creations(fake) == []  # the file is in the newest message: nothing to reuse yet
    second = send(client, "And the first word?")
    assert len(cache_creations(fake)) == 1
    created = cache_creations(fake)[0]["json"]
    assert created["systemInstruction"]["parts"] == [{"text": "Answer from the attached book only."}]
    assert created["ttl"] == "3600s"
    body = fake.last_body()
    assert body["cachedContent"] == "cachedContents/c1"
    assert "systemInstruction" not in body and "tools" not in body
    # only what follows the cached prefix is sent
    assert [c["role"] for c in body["contents"]] == ["model", "user"]
    assert second["reply"]["usage"]["cached_tokens"] >= 2000
    for n in range(3):
        reply = send(client, f"question {n}")["reply"]
        assert reply["usage"]["cached_tokens"] >= 2000
        # what follows the prefix, kept from turn to turn, grows by this turn's messages
        sent = fake.last_body()["contents"]
        assert [c["role"] for c in sent] == ["model", "user"] * (n + 2)
        assert [c["parts"][0]["text"] for c in sent[1::2]] == ["And the first word?"] + [
            f"question {k}" for k in range(n + 1)]
    assert len(cache_creations(fake)) == 1
    assert "_cache" not in client.get(f"{API}/c1").json  # bookkeeping stays private
    assert all("_cache" not in c for c in client.get(API).json["conversations"])


def test_expired_cache_is_recreated(cached, fake):
    client, book = cached
    send(client, "Read this", files=[book["id"]])
    send(client, "Second")
    fake.expire_caches()
    reply = send(client, "Third")["reply"]
    assert reply["status"] == "complete"
    assert len(cache_creations(fake)) == 2
    assert fake.last_body()["cachedContent"] == "cachedContents/c2"


def test_changing_the_prefix_makes_a_new_cache_and_deletes_the_old(cached, fake):
    client, book = cached
    first = send(client, "Read this", files=[book["id"]])
    send(client, "Second")
    client.patch(f"{API}/c1", json={"system_instruction": "Now answer in French."})
    send(client, "Third")
    assert len(cache_creations(fake)) == 2
    assert "cachedContents/c1" not in fake.caches  # the old one was deleted
    client.put(f"{API}/c1/messages/{first['user_message']['id']}", json={"text": "Read this again"})
    # the edited message is the newest: no prefix to cache for this turn, plain request
    assert "cachedContent" not in fake.last_body()


def test_small_prefixes_are_not_cached(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    client = app.test_client()
    client.post(API, json={"id": "c1", "system_instruction": "Be brief."})
    note = upload(client, b"a short note", "note.txt").json
    send(client, "Read", files=[note["id"]])
    send(client, "Again")
    send(client, "Once more")
    assert cache_creations(fake) == []
    counts = [r for r in fake.requests if r["method_name"] == "countTokens"]
    assert len(counts) == 1  # counted once for this prefix, remembered as too small
    assert "cachedContent" not in fake.last_body()


def test_deleting_the_conversation_deletes_its_cache(cached, fake):
    client, book = cached
    send(client, "Read this", files=[book["id"]])
    send(client, "Second")
    assert "cachedContents/c1" in fake.caches
    assert client.delete(f"{API}/c1").status_code == 204
    assert fake.caches == {}
