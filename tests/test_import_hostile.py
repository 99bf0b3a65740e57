"""Imports that are broken or hostile: each is refused with a 422 naming the field, and leaves
nothing behind (no conversation file, no stored file, no search row, no line in the recency
log); or, where the value can be made safe, it is stored in the form the API promises.
Every test drives the HTTP API as a client would."""
from __future__ import annotations

import base64
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from apsara import create_app
from apsara.transfer.common import EARLIEST, LATEST, iso
from tests.conftest import make_settings

API = "/api/v1/conversations"
# Nanoseconds since 1970 in a 64-bit integer end here: the first day that does not fit.
NS_END = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=2 ** 63 // 1000) + timedelta(days=1)
TEXT_FILE = base64.b64encode(b"plain text, enough for the type to be told from the bytes").decode()


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def stored(data_dir: Path) -> dict[str, bytes]:
    """Every conversation and file byte on disk (the recency logs and imports under way included)."""
    return {str(p.relative_to(data_dir)): p.read_bytes()
            for folder in ("history", "files", "imports") if (data_dir / folder).exists()
            for p in (data_dir / folder).rglob("*") if p.is_file()}


def listing(client, query: str = "") -> list[str]:
    response = client.get(f"{API}?{query}")
    assert response.status_code == 200, response.json
    return [c["id"] for c in response.json["conversations"]]


def an_export(client, conversation_id: str = "source") -> dict:
    """A real export of a conversation with one message, made through the API."""
    client.post(API, json={"id": conversation_id, "title": "zebra notes"})
    export = client.get(f"{API}/{conversation_id}/export").json
    stamp = export["conversation"]["created_at"]
    export["messages"] = [{"id": "m1", "role": "user", "parent_id": None, "created_at": stamp,
                           "parts": [{"type": "text", "text": "zebra crossing"}]}]
    export["active"] = {"": "m1"}
    export["conversation"]["id"] = "imported"
    return export


def refused(client, settings, document=None, *, path: str, **post) -> dict:
    """Post an import that must be refused with 422 naming `path`, and store nothing."""
    before = stored(settings.data_dir)
    listed, found = listing(client), listing(client, "q=zebra")
    if document is not None:
        post = {"data": json.dumps(document), "content_type": "application/json"}
    response = client.post(f"{API}/import", **post)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["status"] == "UNPROCESSABLE" and path in error["details"], error
    assert stored(settings.data_dir) == before
    assert listing(client) == listed and listing(client, "q=zebra") == found
    return error


def chatgpt(**changes) -> list[dict]:
    """A ChatGPT conversations.json with one question and its answer."""
    seconds = (datetime.now(timezone.utc) - timedelta(hours=1)).timestamp()
    entry = {"title": "zebra chat", "create_time": seconds, "update_time": seconds + 60, "current_node": "b",
             "mapping": {
                 "a": {"parent": None, "message": {"author": {"role": "user"}, "create_time": seconds,
                                                   "content": {"content_type": "text", "parts": ["zebra?"]}}},
                 "b": {"parent": "a", "message": {"author": {"role": "assistant"}, "create_time": seconds + 5,
                                                  "content": {"content_type": "text", "parts": ["stripes"]}}}}}
    for path, value in changes.items():
        place = entry
        *folders, name = path.split(".")
        for folder in folders:
            place = place[folder]
        place[name] = value
    return [entry]


def openwebui(**message_changes) -> list[dict]:
    seconds = int((datetime.now(timezone.utc) - timedelta(hours=1)).timestamp())
    messages = {"x": {"id": "x", "parentId": None, "role": "user", "content": "zebra?", "timestamp": seconds},
                "y": {"id": "y", "parentId": "x", "role": "assistant", "content": "stripes", "timestamp": seconds}}
    messages["x"].update(message_changes)
    return [{"id": "webui", "title": "zebra chat", "created_at": seconds, "updated_at": seconds,
             "chat": {"history": {"messages": messages, "currentId": "y"}}}]


def openwebui_flat(**message_changes) -> list[dict]:
    """An older Open WebUI export: the messages as a plain list, one branch."""
    entry = openwebui(**message_changes)[0]
    history = entry["chat"].pop("history")
    entry["chat"]["messages"] = [history["messages"]["x"], history["messages"]["y"]]
    return [entry]


# -- times ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("document, path", [
    (chatgpt(update_time=10_000_000_000), "0.update_time"),  # the year 2286
    (chatgpt(create_time=NS_END.timestamp()), "0.create_time"),
    (chatgpt(**{"mapping.b.message.create_time": 10 ** 400}), "0.mapping.b.message.create_time"),
    (chatgpt(**{"mapping.a.message.create_time": -1}), "0.mapping.a.message.create_time"),
    (chatgpt(update_time=LATEST.timestamp()), "0.update_time"),
    (openwebui(timestamp=10 ** 400), "0.chat.history.messages.x.timestamp"),
    (openwebui(timestamp=LATEST.timestamp()), "0.chat.history.messages.x.timestamp"),
    (openwebui_flat(timestamp=NS_END.timestamp()), "0.chat.messages.0.timestamp"),
], ids=["chatgpt-2286", "chatgpt-past-int64-ns", "chatgpt-huge-int", "chatgpt-before-1970", "chatgpt-at-bound",
        "openwebui-huge-int", "openwebui-at-bound", "openwebui-flat-list"])
def test_other_apps_times_out_of_range_are_refused_and_store_nothing(client, settings, document, path):
    client.post(API, json={"id": "source", "title": "zebra notes"})  # so the recency log has a line to keep
    error = refused(client, settings, document, path=path)
    assert "1970-01-01" in error["details"][path][0] and "2200-01-01" in error["details"][path][0]


def test_other_apps_times_inside_the_range_are_kept(client):
    just_inside = LATEST - timedelta(seconds=1)
    response = client.post(f"{API}/import", json=chatgpt(update_time=just_inside.timestamp()))
    assert response.status_code == 201, response.json
    assert response.json["conversations"][0]["updated_at"] == iso(just_inside)
    response = client.post(f"{API}/import", json=chatgpt(create_time=EARLIEST.timestamp()))
    assert response.status_code == 201, response.json
    assert response.json["conversations"][0]["created_at"] == iso(EARLIEST)


@pytest.mark.parametrize("field", ["conversation.updated_at", "conversation.created_at", "messages.0.created_at"])
@pytest.mark.parametrize("value, why", [
    (iso(NS_END), "2200-01-01 on"),  # nanoseconds past int64: it crashed the search index
    (iso(LATEST), "2200-01-01 on"),
    (iso(EARLIEST - timedelta(milliseconds=1)), "2200-01-01 on"),
    ("zzzz", "ISO 8601"),
    ("~~~~", "ISO 8601"),
    (datetime.now(timezone.utc).date().isoformat(), "ISO 8601"),  # no time of day
    (datetime.now(timezone.utc).strftime("%G-W%V-%u"), "ISO 8601"),  # a week date
    (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), "ISO 8601"),  # the basic format
    (datetime.now(timezone.utc).replace(tzinfo=None).isoformat(), "ISO 8601"),  # no offset
], ids=["past-int64-ns", "at-bound", "before-1970", "zzzz", "tildes", "date-only", "week-date", "basic", "naive"])
def test_apsara_times_that_are_not_the_apis_are_refused(client, settings, field, value, why):
    document = an_export(client)
    if field.startswith("messages"):
        document["messages"][0]["created_at"] = value
    else:
        document["conversation"][field.split(".")[1]] = value
    error = refused(client, settings, document, path=field)
    assert why in error["details"][field][0]


def test_apsara_times_with_another_offset_are_stored_in_utc_with_milliseconds(client):
    when = datetime.now(timezone.utc).replace(microsecond=123_456) - timedelta(hours=1)
    document = an_export(client)
    far_east = when.astimezone(timezone(timedelta(hours=14))).isoformat(timespec="seconds")  # ...+14:00
    document["conversation"].update(created_at=far_east, updated_at=far_east)
    far_west = when.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="microseconds")  # ...-05:00
    document["messages"][0]["created_at"] = far_west
    response = client.post(f"{API}/import", json=document)
    assert response.status_code == 201, response.json
    conversation = client.get(f"{API}/imported").json
    assert conversation["created_at"] == iso(when.replace(microsecond=0)) and conversation["created_at"].endswith("Z")
    assert conversation["messages"][0]["created_at"] == iso(when) and iso(when).endswith(".123Z")


def test_a_stored_time_past_the_index_range_does_not_stop_the_next_start(settings):
    # A file written before imports refused such times (or copied in by hand): the start-up
    # check of the search index must index it, not fail every worker's start.
    app = create_app(settings)
    client = app.test_client()
    client.post(API, json={"id": "old", "title": "zebra archive"})
    store = app.extensions["apsara"].store
    document = store.read("local", "old")
    document["conversation"]["updated_at"] = iso(NS_END)
    store.write("local", "old", document)
    (settings.data_dir / "search" / "index.sqlite").unlink()  # the next start indexes every file again
    for leftover in (settings.data_dir / "search").glob("index.sqlite-*"):
        leftover.unlink()
    client = create_app(settings).test_client()
    assert listing(client, "q=zebra") == ["old"]
    client.post(API, json={"id": "new"})
    assert listing(client) == ["old", "new"]  # the far-future time sorts first


# -- parts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("part, field", [
    ({"type": "file"}, "file_id"),
    ({"type": "file", "file_id": "f1"}, "mime_type"),
    ({"type": "function_call"}, "name"),
    ({"type": "function_call", "name": ""}, "name"),
    ({"type": "function_response", "response": {}}, "name"),
    ({"type": "text"}, "text"),
    ({"type": "thought"}, "text"),
    ({"type": "code", "language": "python"}, "code"),
    ({"type": "code_result", "outcome": "OUTCOME_OK"}, "output"),
])
def test_parts_without_what_their_type_needs_are_refused(client, settings, part, field):
    document = an_export(client)
    document["messages"][0]["parts"].append(part)
    refused(client, settings, document, path=f"messages.0.parts.1.{field}")


def test_function_parts_keep_their_call_id_and_the_conversation_goes_on(chat, fake):
    document = an_export(chat)
    stamp = document["messages"][0]["created_at"]
    document["messages"].append({"id": "m2", "role": "model", "parent_id": "m1", "created_at": stamp,
                                 "status": "complete", "model": "gemini-3.8-flash", "parts": [
                                     {"type": "function_call", "name": "get_time", "args": {}, "call_id": "c1"},
                                     {"type": "function_response", "name": "get_time", "call_id": "c1",
                                      "response": {"time": "noon"}},
                                     {"type": "text", "text": "It is noon."}]})
    document["active"]["m1"] = "m2"
    response = chat.post(f"{API}/import", json=document)
    assert response.status_code == 201, response.json
    exported = chat.get(f"{API}/imported/export").json
    assert [p.get("call_id") for p in exported["messages"][1]["parts"]] == ["c1", "c1", None]
    reply = chat.post(f"{API}/imported/messages", json={"text": "and now?"})
    assert reply.status_code == 201, reply.json


# -- ids -------------------------------------------------------------------------------------------
def test_ids_ending_in_a_newline_are_not_ids(client, settings):
    document = an_export(client)
    document["conversation"]["id"] = "kept\n"
    refused(client, settings, document, path="conversation.id")
    document = an_export(client)
    document["files"] = [{"id": "f1\n", "filename": "notes.txt", "data": TEXT_FILE}]
    refused(client, settings, document, path="files.0.id")
    document = an_export(client)
    document["messages"][0]["id"] = "m1\n"
    document["active"] = {"": "m1\n"}
    refused(client, settings, document, path="messages.0.id")


def test_other_apps_ids_ending_in_a_newline_are_replaced(client):
    document = chatgpt(conversation_id="chat\n")
    document[0]["mapping"]["b\n"] = document[0]["mapping"].pop("b")
    document[0]["current_node"] = "b\n"
    response = client.post(f"{API}/import", json=document)
    assert response.status_code == 201, response.json
    conversation_id = response.json["conversations"][0]["id"]
    assert "\n" not in conversation_id
    conversation = client.get(f"{API}/{conversation_id}")
    assert conversation.status_code == 200
    assert [m["text"] for m in conversation.json["messages"]] == ["zebra?", "stripes"]
    assert all("\n" not in m["id"] for m in conversation.json["messages"])


# -- files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("filename, shown", [
    ("a\r\nSet-Cookie: x=1.txt", "aSet-Cookie: x=1.txt"),
    ("nul\x00.txt", "nul.txt"),
    ("C:\\Users\\me\\tab\there.txt", "tabhere.txt"),
    ("../../etc/notes.txt", "notes.txt"),
    ("\n\r", None),
])
def test_imported_file_names_lose_folders_and_control_characters(client, filename, shown):
    document = an_export(client)
    document["files"] = [{"id": "fnotes", "filename": filename, "data": TEXT_FILE}]
    document["messages"][0]["parts"].append({"type": "file", "file_id": "fnotes", "mime_type": "text/plain"})
    response = client.post(f"{API}/import", json=document)
    assert response.status_code == 201, response.json
    meta = client.get("/api/v1/files/fnotes").json
    assert meta["filename"] == (shown or "fnotes")
    for download in (client.get("/api/v1/files/fnotes/content"), client.get(meta["url"])):
        assert download.status_code == 200 and download.data == base64.b64decode(TEXT_FILE)
        assert not any(c in download.headers.get("Content-Disposition", "") for c in "\r\n\x00")


def test_a_multipart_import_with_two_files_is_refused(client, settings):
    document = json.dumps(an_export(client)).encode()
    files = [(io.BytesIO(document), "one.json"), (io.BytesIO(document), "two.json")]
    error = refused(client, settings, path="file", data={"file": files}, content_type="multipart/form-data")
    assert error["details"]["file"] == ["Send one file per import."]


# -- a write that fails part way ---------------------------------------------------------------------
def test_a_conversation_whose_write_failed_part_way_is_taken_back(settings, monkeypatch):
    # The store names a conversation and writes its file before indexing it: an error in the
    # index's step (not one of SQLite's own, which the store logs and lets pass) used to leave the
    # file behind, served by the API although the import answered 500.
    from apsara.search import SearchIndex

    client = create_app(settings).test_client()
    document = an_export(client)
    ours = {p for p in stored(settings.data_dir) if not p.endswith(".recent.log")}  # that log only appends

    def overflowing(self, rows):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(SearchIndex, "put_many", overflowing)
    response = client.post(f"{API}/import", json=document)
    assert response.status_code == 500 and response.json["error"]["status"] == "INTERNAL"
    monkeypatch.undo()
    assert {p for p in stored(settings.data_dir) if not p.endswith(".recent.log")} == ours
    assert client.get(f"{API}/imported").status_code == 404
    client = create_app(settings).test_client()  # and the next start finds nothing to mend
    assert listing(client) == ["source"] and client.get(f"{API}/imported").status_code == 404


# -- what the store's JSON cannot hold -----------------------------------------------------------------
@pytest.mark.parametrize("where, value, path", [("usage", {"prompt_tokens": 2 ** 64}, "usage.prompt_tokens"),
                                                ("grounding", {"chunks": [{"score": -2 ** 63 - 1}]},
                                                 "grounding.chunks.0.score"),
                                                ("last_event_id", -2 ** 70, "last_event_id")])
def test_a_whole_number_past_64_bits_in_a_field_kept_as_it_came_is_refused(client, settings, where, value, path):
    export = an_export(client)
    stamp = export["messages"][0]["created_at"]
    export["messages"].append({"id": "m2", "role": "model", "parent_id": "m1", "created_at": stamp,
                               "parts": [{"type": "text", "text": "zebra answer"}], "status": "complete",
                               where: value})
    export["active"]["m1"] = "m2"
    error = refused(client, settings, [export], path=f"0.messages.1.{path}")
    assert "64 bits" in json.dumps(error["details"])


@pytest.mark.parametrize("parts", [1, True, {"0": "zebra"}, "zebra"])
def test_a_chatgpt_message_whose_parts_are_not_a_list_shows_nothing(client, parts):
    response = client.post(f"{API}/import", json=chatgpt(**{"mapping.b.message.content.parts": parts}))
    assert response.status_code == 201, response.json
    assert response.json["skipped"]["messages"] == 1
    stored_id = response.json["conversations"][0]["id"]
    assert [m["text"] for m in client.get(f"{API}/{stored_id}").json["messages"]] == ["zebra?"]


# -- an import whose writer died -------------------------------------------------------------------
def test_an_import_whose_writer_died_is_taken_back_but_not_a_conversation_it_never_stored(settings):
    # Its entry names "theirs" too, which it never stored: someone made it since, and keeps it.
    from apsara.conversations.writers import new_writer

    app = create_app(settings)
    client = app.test_client()
    transfers = app.extensions["apsara"].transfers
    document = an_export(client)
    assert client.post(f"{API}/import", json=document).status_code == 201
    assert not list((settings.data_dir / "imports").iterdir())  # crossed out once stored
    store = app.extensions["apsara"].store
    marked = store.read("local", "imported")
    token = marked["conversation"]["_import"]
    writer = new_writer()
    boot, ticks = writer["pid_start"].rsplit(":", 1)
    dead = {**writer, "pid_start": f"{boot}:{int(ticks) - 1}"}  # this pid's earlier holder
    transfers.pending.write({"token": token, "owner": "local", "conversations": ["imported", "theirs"],
                             "writer": dead})
    assert client.post(API, json={"id": "theirs"}).status_code == 201
    transfers._next_check = 0.0  # as a process that has not looked yet
    assert sorted(listing(client)) == ["source", "theirs"]
    assert client.get(f"{API}/imported").status_code == 404
    assert not list((settings.data_dir / "imports").iterdir())
    # An entry whose writer lives is left to it.
    transfers.pending.write({"token": "i-live", "owner": "local", "conversations": ["theirs"], "writer": writer})
    transfers._next_check = 0.0
    assert sorted(listing(client)) == ["source", "theirs"]
    assert [entry["token"] for entry in transfers.pending.entries()] == ["i-live"]


# -- size ----------------------------------------------------------------------------------------
def test_a_conversation_of_more_messages_than_any_chat_is_refused_and_stores_nothing(client, settings):
    from apsara.transfer.importing import MAX_MESSAGES

    entry = chatgpt()[0]
    seconds = entry["create_time"]
    entry["mapping"] = {f"n{k}": {"parent": f"n{k - 1}" if k else None,
                                  "message": {"author": {"role": "user" if k % 2 == 0 else "assistant"},
                                              "create_time": seconds,
                                              "content": {"content_type": "text", "parts": [f"zebra {k}"]}}}
                        for k in range(MAX_MESSAGES + 1)}
    entry["current_node"] = f"n{MAX_MESSAGES}"
    error = refused(client, settings, [entry], path="0.messages")
    assert str(MAX_MESSAGES) in error["details"]["0.messages"][0]
    # one message fewer is a conversation like any other
    del entry["mapping"][f"n{MAX_MESSAGES}"]
    entry["current_node"] = f"n{MAX_MESSAGES - 1}"
    response = client.post(f"{API}/import", json=[entry])
    assert response.status_code == 201, response.json
    assert response.json["conversations"][0]["message_count"] == MAX_MESSAGES
