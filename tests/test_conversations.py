"""Conversations API: create, list with cursors, get, patch, delete, validation."""
from __future__ import annotations

import json
import re

import pytest

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
API = "/api/v1/conversations"


def test_create_with_everything_then_get(client):
    body = {"id": "my-session-1", "title": "Trip plan", "model": "gemini-3.8-flash",
            "system_instruction": "You are Apsara.", "tools": ["google_search", "calculator"],
            "settings": {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_output_tokens": 2048,
                         "stop_sequences": ["END"], "seed": 1, "thinking_level": "low",
                         "include_thoughts": True}}
    created = client.post(API, json=body)
    assert created.status_code == 201
    conversation = created.json
    assert conversation["id"] == "my-session-1"
    assert conversation["tools"] == ["google_search", "calculator"]
    assert conversation["settings"]["thinking_level"] == "low"
    assert conversation["message_count"] == 0 and conversation["messages"] == []
    assert STAMP.match(conversation["created_at"]) and STAMP.match(conversation["updated_at"])
    fetched = client.get(f"{API}/my-session-1")
    assert fetched.status_code == 200 and fetched.json == conversation


def test_create_without_body_uses_defaults(client):
    created = client.post(API)
    assert created.status_code == 201
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", created.json["id"])
    assert created.json["model"] == "gemini-3.8-flash"
    assert created.json["settings"] == {} and created.json["tools"] == []


def test_taken_id_is_409_and_original_untouched(client):
    client.post(API, json={"id": "trip-1", "title": "first"})
    again = client.post(API, json={"id": "trip-1", "title": "second"})
    assert again.status_code == 409
    assert again.json["error"]["status"] == "ALREADY_EXISTS"
    assert client.get(f"{API}/trip-1").json["title"] == "first"


def test_list_is_newest_first_with_cursor_pages(client):
    for n in range(25):
        client.post(API, json={"id": f"c{n:02d}"})
    # Touch one old conversation: it becomes the newest.
    client.patch(f"{API}/c03", json={"title": "touched"})
    seen, cursor = [], None
    while True:
        query = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(API, query_string=query)
        assert page.status_code == 200
        assert all("messages" not in c for c in page.json["conversations"])
        seen += page.json["conversations"]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    ids = [c["id"] for c in seen]
    assert len(ids) == 25 and len(set(ids)) == 25
    assert ids[0] == "c03"
    keys = [(c["updated_at"], c["id"]) for c in seen]
    # newest updated_at first, ties by id ascending
    assert keys == sorted(keys, key=lambda k: (_neg(k[0]), k[1]))


def _neg(stamp):
    return tuple(-ord(ch) for ch in stamp)


def test_list_default_limit_and_empty(client):
    assert client.get(API).json == {"conversations": [], "next_cursor": None}
    for n in range(21):
        client.post(API, json={"id": f"x{n}"})
    page = client.get(API).json
    assert len(page["conversations"]) == 20 and page["next_cursor"]


@pytest.mark.parametrize("query, field", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "W10"}, "cursor"),
])
def test_list_bad_query_is_422(client, query, field):
    response = client.get(API, query_string=query)
    assert response.status_code == 422
    assert field in response.json["error"]["details"]


def test_patch_merges_settings_and_null_resets(client):
    client.post(API, json={"id": "p", "settings": {"temperature": 0.3, "top_k": 5}})
    changed = client.patch(f"{API}/p", json={"title": "New", "settings": {"temperature": None, "seed": 7}})
    assert changed.status_code == 200
    assert changed.json["title"] == "New"
    assert changed.json["settings"] == {"top_k": 5, "seed": 7}
    assert changed.json["updated_at"] >= changed.json["created_at"]
    assert client.get(f"{API}/p").json["settings"] == {"top_k": 5, "seed": 7}


def test_patch_model_and_tools(client):
    client.post(API, json={"id": "p"})
    changed = client.patch(f"{API}/p", json={"model": "gemini-3.1-pro-preview", "tools": ["code_execution"]})
    assert changed.json["model"] == "gemini-3.1-pro-preview"
    assert changed.json["tools"] == ["code_execution"]


def test_delete(client):
    client.post(API, json={"id": "gone"})
    assert client.delete(f"{API}/gone").status_code == 204
    assert client.get(f"{API}/gone").status_code == 404
    assert client.delete(f"{API}/gone").status_code == 404
    assert client.get(API).json["conversations"] == []


@pytest.mark.parametrize("body, field", [
    ({"bogus": 1}, "bogus"),
    ({"id": "has space"}, "id"),
    ({"id": "x" * 65}, "id"),
    ({"id": 5}, "id"),
    ({"title": "t" * 201}, "title"),
    ({"title": 3}, "title"),
    ({"model": 3}, "model"),
    ({"model": "gemini-1.5-pro"}, "model"),
    ({"tools": "google_search"}, "tools"),
    ({"tools": ["teleport"]}, "tools"),
    ({"settings": {"temperature": 2.5}}, "settings.temperature"),
    ({"settings": {"temperature": "0.7"}}, "settings.temperature"),
    ({"settings": {"top_p": -0.1}}, "settings.top_p"),
    ({"settings": {"top_k": 1.5}}, "settings.top_k"),
    ({"settings": {"max_output_tokens": 0}}, "settings.max_output_tokens"),
    ({"settings": {"stop_sequences": ["a"] * 6}}, "settings.stop_sequences"),
    ({"settings": {"seed": True}}, "settings.seed"),
    ({"settings": {"thinking_level": "huge"}}, "settings.thinking_level"),
    ({"settings": {"include_thoughts": "yes"}}, "settings.include_thoughts"),
    ({"settings": {"unknown": 1}}, "settings.unknown"),
    ({"settings": {"thinking_level": "low", "thinking_budget": 100}}, "settings.thinking_budget"),
    ({"settings": {"thinking_budget": 1024}}, "settings.thinking_budget"),  # 3.x takes levels
    ({"model": "gemini-2.5-flash-lite", "settings": {"thinking_level": "low"}}, "settings.thinking_level"),
    ({"model": "gemini-2.5-flash-lite", "settings": {"thinking_budget": 100}}, "settings.thinking_budget"),
    ({"model": "gemini-3.8-flash", "settings": {"thinking_level": "minimal"}}, "settings.thinking_level"),
    ({"model": "gemini-3.1-flash-image", "tools": ["google_search"]}, "tools"),
    ({"model": "gemini-3.1-flash-image", "settings": {"include_thoughts": True}}, "settings.include_thoughts"),
])
def test_create_validation_is_422_and_stores_nothing(client, settings, body, field):
    response = client.post(API, json=body)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["status"] == "UNPROCESSABLE" and field in error["details"]
    assert client.get(API).json["conversations"] == []
    assert not list((settings.data_dir / "history").rglob("*.json"))


def test_unavailable_model_names_the_available_ones(client):
    error = client.post(API, json={"model": "gemini-2.0-flash"}).json["error"]
    assert "gemini-3.8-flash" in error["message"]


def test_tool_on_wrong_model_names_models_that_can(client):
    error = client.post(API, json={"model": "gemini-3.1-flash-image", "tools": ["code_execution"]}).json["error"]
    assert "gemini-3.8-flash" in error["message"]


@pytest.mark.parametrize("body, field", [
    ({}, "_body"),
    ({"id": "other"}, "id"),
    ({"settings": {"temperature": 9}}, "settings.temperature"),
    ({"model": "nope"}, "model"),
    ({"tools": ["code_execution"], "model": "gemini-3.1-flash-image"}, "tools"),
])
def test_patch_validation_changes_nothing(client, body, field):
    before = client.post(API, json={"id": "p", "title": "keep", "settings": {"temperature": 1}}).json
    response = client.patch(f"{API}/p", json=body)
    assert response.status_code == 422
    assert field in response.json["error"]["details"]
    assert client.get(f"{API}/p").json == before


def test_patch_switching_to_a_model_that_cannot_keep_the_settings(client):
    client.post(API, json={"id": "p", "settings": {"thinking_level": "high"}})
    response = client.patch(f"{API}/p", json={"model": "gemini-2.5-flash-lite"})
    assert response.status_code == 422
    # ...and with the setting cleared in the same request it works
    response = client.patch(f"{API}/p", json={"model": "gemini-2.5-flash-lite",
                                              "settings": {"thinking_level": None, "thinking_budget": 1024}})
    assert response.status_code == 200
    assert response.json["settings"] == {"thinking_budget": 1024}


def test_malformed_json_and_wrong_content_type(client):
    bad = client.post(API, data="{not json", content_type="application/json")
    assert bad.status_code == 400 and bad.json["error"]["status"] == "INVALID_ARGUMENT"
    text = client.post(API, data="title=x", content_type="text/plain")
    assert text.status_code == 415
    array = client.post(API, data=json.dumps([1, 2]), content_type="application/json")
    assert array.status_code == 422
    assert client.get(API).json["conversations"] == []


def test_file_on_disk_is_lines_of_json_with_schema_version(client, settings):
    client.post(API, json={"id": "disk", "title": "on disk"})
    [path] = (settings.data_dir / "history").rglob("disk.json")
    header, tree, mark = [json.loads(line) for line in path.read_text().splitlines()]
    assert header["schema_version"] == 2
    assert header["conversation"]["title"] == "on disk"
    assert tree == {"messages": [], "active": {}}
    assert mark["m"]["message_count"] == 0
    client.patch(f"{API}/disk", json={"title": "renamed"})  # a change appends a record and a mark
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[:3] == [header, tree, mark]
    assert lines[3]["type"] == "conversation" and lines[3]["conversation"]["title"] == "renamed"
    assert "m" in lines[4]
