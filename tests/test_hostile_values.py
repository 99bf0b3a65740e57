"""Values that pass a loose check but break what reads them: a clear 4xx, nothing changed.

Event ids in other scripts' digits or too long to be an int, forged list cursors
past 64 bits, made-up HTTP methods (metrics label values), and JSON bodies in
UTF-16, UTF-32 or with a byte order mark.
"""
from __future__ import annotations

import base64
import json

import pytest

from apsara import create_app
from tests.conftest import make_settings
from tests.test_hostile_input import envelope
from tests.test_metrics import TOKEN, samples

API = "/api/v1/conversations"


def files_under(folder) -> dict:
    return {str(p): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


# --- Last-Event-ID --------------------------------------------------------------------------------------------

@pytest.fixture
def reply_events(chat):
    chat.post(API, json={"id": "trip"})
    reply = chat.post(f"{API}/trip/messages", json={"text": "hi"}).json["reply"]
    return f"{API}/trip/messages/{reply['id']}/events"


@pytest.mark.parametrize("header", ["\u00b2", "\u00b9", "\u0661", "9" * 5000, "9" * 19, "-1", "1e3", "", "1 2"])
def test_a_last_event_id_that_is_not_ascii_digits_is_422(chat, reply_events, header):
    error = envelope(chat.get(reply_events, headers={"Last-Event-ID": header}), 422)
    assert "Last-Event-ID" in error["details"]


@pytest.mark.parametrize("after", ["\u0661", "1_0", " 2", "9" * 19, "-1", "1e3", ""])
def test_an_after_that_is_not_ascii_digits_is_422_as_the_header_is(chat, reply_events, after):
    error = envelope(chat.get(reply_events, query_string={"after": after}), 422)
    assert "after" in error["details"]


def test_a_last_event_id_of_ascii_digits_replays_after_it(chat, reply_events):
    everything = chat.get(reply_events).get_data(as_text=True)
    assert "event: done" in everything
    after_start = chat.get(reply_events, headers={"Last-Event-ID": " 2 "}).get_data(as_text=True)
    assert "event: reply_start\nid: 2\n" in everything
    assert "id: 2\n" not in after_start and "event: done" in after_start
    # The longest id taken is past any stream: nothing after it.
    assert chat.get(reply_events, headers={"Last-Event-ID": "9" * 18}).get_data(as_text=True) == ""


# --- list cursors ---------------------------------------------------------------------------------------------

def forged(position) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", [[2 ** 63, "c1"], [-2 ** 63 - 1, "c1"], [2 ** 70, "c1"], [True, "c1"],
                                      [False, "c1"], [1.5, "c1"], [1, ""], [1, "x" * 65], [1, "a/b"], [1, "\u0000"]])
@pytest.mark.parametrize("search", ["", "&q=lisbon"])
def test_a_forged_cursor_is_422(client, position, search):
    for i in range(3):
        client.post(API, json={"id": f"c{i}", "title": f"lisbon hotel {i}"})
    error = envelope(client.get(f"{API}?cursor={forged(position)}{search}"), 422)
    assert "cursor" in error["details"]


@pytest.mark.parametrize("search", ["", "&q=lisbon"])
def test_cursors_at_the_ends_of_64_bits_are_read(client, search):
    client.post(API, json={"id": "c1", "title": "lisbon hotel"})
    # Newest first: everything is older than the largest time, nothing older than the smallest.
    page = client.get(f"{API}?cursor={forged([2 ** 63 - 1, 'c1'])}{search}").json
    assert [c["id"] for c in page["conversations"]] == ["c1"]
    assert client.get(f"{API}?cursor={forged([-2 ** 63, 'c1'])}{search}").json == {
        "conversations": [], "next_cursor": None}


# --- metrics labels -------------------------------------------------------------------------------------------

def test_made_up_methods_share_one_metrics_label(tmp_path):
    app = create_app(make_settings(tmp_path, metrics_token="metrics-secret"))
    client = app.test_client()
    for i in range(20):
        client.open("/health", method=f"X{i:04d}")
        client.open(API, method=f"Y{i:04d}")
    found = samples(client.get("/metrics", headers=TOKEN).get_data(as_text=True))
    methods = {dict(labels).get("method") for name, labels in found if name.startswith("apsara_http_request")}
    assert not {m for m in methods if m and m[0] in "XY"}, methods
    assert "other" in methods and "GET" in methods


# --- body encodings -------------------------------------------------------------------------------------------

ENCODINGS = ["utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-32-le", "utf-8-sig"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_json_body_not_in_utf8_is_400_on_api(client, settings, encoding):
    before = files_under(settings.data_dir)
    body = json.dumps({"id": "enc", "title": "t"}).encode(encoding)
    error = envelope(client.post(API, data=body, content_type="application/json"), 400)
    assert error["message"].startswith("the body is not valid UTF-8")
    export = [{"title": "t", "mapping": {"a": {"parent": None, "message": {
        "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["hi"]}}}}}]
    error = envelope(client.post(f"{API}/import", data=json.dumps(export).encode(encoding),
                                 content_type="application/json"), 400)
    assert error["message"].startswith("the body is not valid UTF-8")
    assert client.get(API).json["conversations"] == [] and files_under(settings.data_dir) == before


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_json_body_not_in_utf8_is_400_on_openai(chat, encoding):
    body = json.dumps({"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": "hi"}]})
    response = chat.post("/v1/chat/completions", data=body.encode(encoding), content_type="application/json")
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("the body is not valid UTF-8")


def test_an_escaped_nul_is_still_read(client):
    response = client.post(API, data=b'{"id": "nul", "title": "a\\u0000b"}', content_type="application/json")
    assert response.status_code == 201 and response.json["title"] == "a\x00b"


def test_the_openapi_document_bounds_last_event_id(client):
    document = client.get("/api/v1/openapi.json").json
    events = document["paths"]["/api/v1/conversations/{conversation_id}/messages/{reply_id}/events"]["get"]
    header = next(p for p in events["parameters"] if p["name"] == "Last-Event-ID")
    assert header["schema"] == {"type": "integer", "minimum": 0, "maximum": 10 ** 18 - 1}
