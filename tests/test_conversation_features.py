"""What a chat frontend expects besides chatting: titles, archive and pin, temporary conversations,
search, export and import, fork. Every test drives the HTTP API as a client would."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apsara import create_app
from apsara.clock import an_hour_ago
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings, parse_sse
from tests.test_files import png_bytes, upload

pytestmark = pytest.mark.usefixtures("store_kind")

API = "/api/v1/conversations"
EXPORTS = Path(__file__).parent / "fixtures" / "exports"
ROOT = Path(__file__).resolve().parents[1]


def send(client, conversation_id, text, **body):
    response = client.post(f"{API}/{conversation_id}/messages", json={"text": text, **body})
    assert response.status_code == 201, response.json
    return response.json


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def listing(client, query=""):
    response = client.get(f"{API}?{query}")
    assert response.status_code == 200, response.json
    return [c["id"] for c in response.json["conversations"]]


def files_on_disk(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


# -- titles ------------------------------------------------------------------------------------
@pytest.fixture
def chat(tmp_path, fake):
    """A client of an app with automatic titles on, as a server has them."""
    return create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                    auto_titles=True)).test_client()


def test_title_source_follows_who_wrote_the_title(client):
    assert client.post(API, json={"id": "a"}).json["title_source"] is None
    assert client.post(API, json={"id": "b", "title": "Trip"}).json["title_source"] == "user"
    patched = client.patch(f"{API}/a", json={"title": "Mine"}).json
    assert (patched["title"], patched["title_source"]) == ("Mine", "user")


def test_automatic_title_after_the_first_turn_is_marked_auto_and_streamed(chat, fake):
    chat.post(API, json={"id": "c1"})
    gate_open = __import__("threading").Event()
    fake.push(Reply(parts=["Paris", " is lovely."], hold=gate_open))
    response = chat.post(f"{API}/c1/messages", json={"text": "plan a weekend trip to Paris please",
                                                      "stream": True}, buffered=False)
    chunks = iter(response.response)
    first = next(chunks).decode()  # the user message is out: the reply waits on the gate
    wait_until(lambda: chat.get(f"{API}/c1").json["title_source"] == "auto")
    gate_open.set()
    events, _ = parse_sse(first + b"".join(chunks).decode())
    titles = [data for name, _, data in events if name == "title"]
    assert titles == [{"title": "Plan A Weekend Trip To"}]
    names = [name for name, _, _ in events]
    assert names.index("title") < names.index("done")  # sent while the stream was open
    ids = [event_id for _, event_id, _ in events]
    assert ids == sorted(set(ids))  # one numbering for the whole stream
    conversation = chat.get(f"{API}/c1").json
    assert (conversation["title"], conversation["title_source"]) == ("Plan A Weekend Trip To", "auto")
    assert len(fake.title_requests()) == 1
    reply_id = conversation["messages"][1]["id"]
    replay, _ = parse_sse(chat.get(f"{API}/c1/messages/{reply_id}/events").get_data(as_text=True))
    assert [e for e in replay if e[0] == "title"] == [e for e in events if e[0] == "title"]  # kept with the reply
    send(chat, "c1", "and the second day?")  # later turns never ask again
    assert len(fake.title_requests()) == 1


def test_a_users_title_is_never_overwritten(chat, fake):
    chat.post(API, json={"id": "named", "title": "My trip"})
    send(chat, "named", "plan a weekend trip")
    time.sleep(0.3)
    assert chat.get(f"{API}/named").json["title"] == "My trip" and fake.title_requests() == []
    # A title set while the automatic one is being written wins too.
    chat.post(API, json={"id": "race"})
    fake.push(Reply(parts=["ok"], delay_s=0.3))
    chat.post(f"{API}/race/messages", json={"text": "hello there", "stream": False})
    wait_until(lambda: chat.get(f"{API}/race").json["title_source"] == "auto")
    chat.patch(f"{API}/race", json={"title": "Chosen"})
    time.sleep(0.2)
    assert chat.get(f"{API}/race").json["title"] == "Chosen"


def test_a_failing_title_model_never_fails_the_turn(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   auto_titles=True, title_model="no-such-model"))
    client = app.test_client()
    client.post(API, json={"id": "c"})
    reply = send(client, "c", "hello there")["reply"]
    assert reply["status"] == "complete"
    time.sleep(0.3)
    assert client.get(f"{API}/c").json["title_source"] is None


# -- archive, pin, temporary ----------------------------------------------------------------------
def test_archived_pinned_and_temporary_listing_filters(client):
    for name in ("plain", "archived", "pinned", "temp"):
        client.post(API, json={"id": name, **({"temporary": True} if name == "temp" else {})})
    assert client.patch(f"{API}/archived", json={"archived": True}).json["archived"] is True
    assert client.patch(f"{API}/pinned", json={"pinned": True}).json["pinned"] is True
    assert sorted(listing(client)) == ["pinned", "plain"]
    assert listing(client, "archived=true") == ["archived"]
    assert listing(client, "pinned=true") == ["pinned"]
    assert listing(client, "temporary=true") == ["temp"]
    assert sorted(listing(client, "archived=false&pinned=false")) == ["pinned", "plain"]
    assert client.get(f"{API}/temp").json["temporary"] is True
    client.patch(f"{API}/archived", json={"archived": False})
    assert "archived" in listing(client)


@pytest.mark.parametrize("query", ["archived=yes", "pinned=1", "temporary=", "archived=True"])
def test_bad_boolean_query_values_are_refused(client, query):
    response = client.get(f"{API}?{query}")
    name = query.split("=")[0]
    assert response.status_code == 422 and name in response.json["error"]["details"]


@pytest.mark.parametrize("body, path", [({"archived": "yes"}, "archived"), ({"pinned": 1}, "pinned"),
                                        ({"temporary": True}, "temporary")])
def test_bad_flag_bodies_are_refused_and_change_nothing(client, body, path):
    client.post(API, json={"id": "c"})
    before = client.get(f"{API}/c").json
    response = client.patch(f"{API}/c", json=body)
    assert response.status_code == 422 and path in response.json["error"]["details"]
    assert client.get(f"{API}/c").json == before


def test_temporary_conversations_are_swept_after_their_ttl(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   temporary_ttl_h=1.0 / 3600, temporary_sweep_s=0.2))
    client = app.test_client()
    client.post(API, json={"id": "keep"})
    client.post(API, json={"id": "gone", "temporary": True})
    send(client, "gone", "a secret")
    assert client.get(f"{API}/gone").status_code == 200
    wait_until(lambda: client.get(f"{API}/gone").status_code == 404, timeout=5)
    assert client.get(f"{API}/keep").status_code == 200
    assert listing(client, "temporary=true&q=secret") == []


# -- search ----------------------------------------------------------------------------------------
def test_search_finds_titles_and_every_version_with_snippets(chat, fake):
    chat.post(API, json={"id": "trip", "title": "Holiday in Lisbon"})
    chat.post(API, json={"id": "cook"})
    first = send(chat, "cook", "how do I bake sourdough bread")
    chat.put(f"{API}/cook/messages/{first['user_message']['id']}", json={"text": "how to make pancakes"})
    long_text = "filler " * 200 + "the Zanzibar spice route " + "tail " * 200
    chat.post(API, json={"id": "long"})
    send(chat, "long", long_text)

    def search(q, extra=""):
        response = chat.get(f"{API}?q={q}{extra}")
        assert response.status_code == 200, response.json
        return response.json["conversations"]

    assert [c["id"] for c in search("lisbon")] == ["trip"]
    assert [c["id"] for c in search("SOURDOUGH")] == ["cook"]  # an old version, any case
    hit = search("zanzibar spice")[0]  # the user message and the echoed reply both hold it
    assert hit["id"] == "long" and "Zanzibar" in hit["snippet"] and len(hit["snippet"]) <= 300
    assert search("sourdough lisbon") == []  # all words, in one text
    assert search("sour") == []  # whole words
    assert search("lisbon", "&archived=true") == []
    chat.patch(f"{API}/trip", json={"archived": True})
    assert search("lisbon") == [] and [c["id"] for c in search("lisbon", "&archived=true")] == ["trip"]
    chat.patch(f"{API}/trip", json={"title": "Weekend in Porto", "archived": False})
    assert search("lisbon") == [] and [c["id"] for c in search("porto")] == ["trip"]
    chat.delete(f"{API}/cook")
    assert search("pancakes") == []


@pytest.mark.parametrize("stream", [False, True])
def test_search_finds_what_only_a_reply_said(chat, fake, stream):
    chat.post(API, json={"id": "answered"})
    fake.push(Reply(parts=["the quixotic ", "lighthouse keeper ", "sang"]))  # one text, arriving in pieces
    response = chat.post(f"{API}/answered/messages", json={"text": "tell me a story", "stream": stream})
    assert response.status_code == (200 if stream else 201)
    response.get_data()  # a stream: to its end
    hits = chat.get(f"{API}?q=quixotic lighthouse").json["conversations"]
    assert [c["id"] for c in hits] == ["answered"] and "lighthouse keeper" in hits[0]["snippet"]


def test_search_pages_with_the_cursor_newest_first(client):
    for n in range(5):
        client.post(API, json={"id": f"c{n}", "title": f"common word {n}"})
    seen, cursor = [], None
    while True:
        query = "q=common&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(f"{API}?{query}").json
        seen += [c["id"] for c in body["conversations"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c4", "c3", "c2", "c1", "c0"]


def test_search_and_export_never_reach_another_user(users):
    alice, bob = users["alice"], users["bob"]
    alice.post(API, json={"id": "mine", "title": "alice secret plans"})
    assert bob.get(f"{API}?q=secret").json["conversations"] == []
    assert bob.get(f"{API}/mine/export").status_code == 404
    assert bob.post(f"{API}/mine/fork", json={"message_id": "m1"}).status_code == 404
    exported = alice.get(f"{API}/mine/export").json
    assert bob.post(f"{API}/import", json=exported).status_code == 201  # bob's own copy
    assert [c["id"] for c in bob.get(f"{API}?q=secret").json["conversations"]] == ["mine"]
    assert alice.get(f"{API}/mine").json["title"] == "alice secret plans"


@pytest.mark.file_format  # the file store's own index; PostgreSQL searches its own rows
def test_the_index_is_mended_at_start_and_rebuilt_by_command(tmp_path):
    settings = make_settings(tmp_path)
    client = create_app(settings).test_client()
    client.post(API, json={"id": "one", "title": "alpha beta"})
    client.post(API, json={"id": "two", "title": "gamma"})
    index = settings.data_dir / "search" / "index.sqlite"
    import sqlite3

    with sqlite3.connect(index) as db:  # drift: a lost row, and one indexed before its last change
        db.execute("DELETE FROM conversations WHERE id = 'one'")
        db.execute("UPDATE conversations SET updated_ns = 1, updated_at = ? WHERE id = 'two'", (an_hour_ago(),))
        db.execute("DELETE FROM texts")
    client = create_app(settings).test_client()
    assert listing(client, "q=alpha") == ["one"] and listing(client, "q=gamma") == ["two"]
    index.unlink()
    for leftover in index.parent.glob("index.sqlite-*"):
        leftover.unlink()
    result = subprocess.run([sys.executable, "-m", "apsara.search", "--rebuild"], cwd=ROOT, capture_output=True,
                            text=True, env={"APSARA_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert result.returncode == 0 and "indexed 2 conversation(s)" in result.stdout
    assert listing(create_app(settings).test_client(), "q=beta") == ["one"]


@pytest.mark.file_format
def test_a_turn_whose_index_write_fails_is_stored_and_found_after_the_next_start(tmp_path, fake, caplog):
    from apsara.search import SearchIndex

    settings = make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url)
    client = create_app(settings).test_client()
    client.post(API, json={"id": "c"})
    import sqlite3

    def locked(*args, **kwargs):  # the index database refuses the write (locked past its timeout)
        raise sqlite3.OperationalError("database is locked")

    original, SearchIndex.update = SearchIndex.update, locked
    try:
        response = client.post(f"{API}/c/messages", json={"text": "zebra crossing"})
    finally:
        SearchIndex.update = original
    assert response.status_code == 201  # the files are the truth: the turn is stored all the same
    assert "search index: could not keep up with a change" in caplog.text
    assert [m["text"] for m in client.get(f"{API}/c").json["messages"]][0] == "zebra crossing"
    assert listing(client, "q=zebra") == []
    assert listing(create_app(settings).test_client(), "q=zebra") == ["c"]  # mended at the start


@pytest.mark.file_format
def test_an_index_ahead_of_its_files_is_mended_at_start(tmp_path, fake):
    # A turn's index write runs beside its fsync: a machine that stops before the fsync ends can
    # leave index rows for records the file never kept.
    settings = make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url)
    client = create_app(settings).test_client()
    client.post(API, json={"id": "c"})
    path = settings.data_dir / "history" / "local" / "c.json"
    before = path.read_bytes()
    assert client.post(f"{API}/c/messages", json={"text": "zebra crossing"}).status_code == 201
    assert listing(client, "q=zebra") == ["c"]
    path.write_bytes(before)  # the turn's records never reached the disk; the file's time is the write's
    client = create_app(settings).test_client()
    assert listing(client, "q=zebra") == [] and client.get(f"{API}/c").json["messages"] == []


# -- export and import ----------------------------------------------------------------------------
def test_json_export_restores_the_conversation_exactly(chat, fake):
    chat.post(API, json={"id": "src", "title": "Versions", "system_instruction": "Be brief.",
                         "settings": {"temperature": 0.3}})
    first = send(chat, "src", "first question")
    chat.post(f"{API}/src/messages/{first['reply']['id']}/regenerate", json={})
    send(chat, "src", "second question")
    chat.post(f"{API}/src/messages/{first['reply']['id']}/select")
    chat.patch(f"{API}/src", json={"pinned": True})
    exported = chat.get(f"{API}/src/export").json
    assert exported["format"] == "apsara.conversation" and len(exported["messages"]) == 5
    assert "temporary" not in exported["conversation"]

    before = chat.get(f"{API}/src").json
    chat.delete(f"{API}/src")
    response = chat.post(f"{API}/import", json=exported)
    assert response.status_code == 201, response.json
    assert response.json["skipped"] == {"messages": 0, "conversations": 0}
    assert response.json["conversations"][0]["id"] == "src"
    after = chat.get(f"{API}/src").json
    assert after == before
    assert chat.get(f"{API}/src/export").json["messages"] == exported["messages"]
    # Importing again makes a second copy under a new id.
    again = chat.post(f"{API}/import", json=exported).json["conversations"][0]
    assert again["id"] != "src" and again["title"] == "Versions" and again["title_source"] == "user"
    send(chat, "src", "the restored conversation goes on")  # a working conversation, not a display copy


def test_export_with_inline_files_carries_their_bytes_to_another_user(users, tmp_path):
    alice, bob = users["alice"], users["bob"]
    picture = png_bytes()
    file_id = upload(alice, picture, "red.png").json["id"]
    alice.post(API, json={"id": "pic"})
    services = users["app"].extensions["apsara"]
    with services.manager.editing("alice", "pic") as document:  # a stored turn that refers to the file
        document["messages"].append({"id": "m1", "role": "user", "parent_id": None, "created_at":
                                     document["conversation"]["created_at"],
                                     "parts": [{"type": "file", "file_id": file_id, "mime_type": "image/png"}]})
        document["active"][""] = "m1"
    plain = alice.get(f"{API}/pic/export").json
    assert plain["files"][0]["id"] == file_id and "data" not in plain["files"][0]
    inline = alice.get(f"{API}/pic/export?files=inline").json
    assert base64.b64decode(inline["files"][0]["data"]) == picture
    assert bob.post(f"{API}/import", json=inline).status_code == 201
    bob_file = bob.get(f"{API}/pic").json["messages"][0]["parts"][0]["file_id"]
    assert bob.get(f"/api/v1/files/{bob_file}/content").data == picture
    assert alice.get(f"{API}/pic/export?files=attached").status_code == 422


def test_markdown_export_is_the_active_path(chat, fake):
    chat.post(API, json={"id": "md", "title": "Notes"})
    send(chat, "md", "write `code` please")
    response = chat.get(f"{API}/md/export?format=markdown")
    assert response.status_code == 200 and response.mimetype == "text/markdown"
    text = response.get_data(as_text=True)
    assert text.startswith("# Notes\n") and "## You" in text and "write `code` please" in text
    assert chat.get(f"{API}/md/export?format=pdf").status_code == 422


def test_chatgpt_export_imports_as_a_multipart_file(client):
    raw = (EXPORTS / "chatgpt-export.json").read_bytes()
    response = client.post(f"{API}/import", data={"file": (io.BytesIO(raw), "conversations.json")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    assert response.json["skipped"] == {"messages": 11, "conversations": 0}
    imported = response.json["conversations"]
    assert [c["message_count"] for c in imported] == [6, 4]
    assert all(c["title_source"] == "user" for c in imported)
    first = client.get(f"{API}/{imported[0]['id']}").json
    assert [m["role"] for m in first["messages"]][:2] == ["user", "model"]
    assert listing(client, "q=" + first["messages"][0]["text"].split()[0])


def test_chatgpt_branches_and_open_webui_as_json_bodies(client):
    tree = json.loads((EXPORTS / "chatgpt-tree.json").read_text())
    body = client.post(f"{API}/import", json=tree).json
    conversation = client.get(f"{API}/{body['conversations'][0]['id']}").json
    assert conversation["messages"][-1]["id"] == "f63b8e17-aa5c-4ca6-a1bf-d4d285e269b8"
    assert len(conversation["messages"][-1]["siblings"]) == 2
    webui = json.loads((EXPORTS / "openwebui-export.json").read_text())
    body = client.post(f"{API}/import", json=webui).json
    assert [c["id"] for c in body["conversations"]] == ["reasoning-chat", "tool-chat", "simple-chat"]


@pytest.mark.parametrize("payload, content_type, status", [
    (b"not json at all", "multipart", 422),
    (b'{"some": "document"}', "multipart", 422),
    (b"[1, 2, 3]", "application/json", 422),
    (b"hello", "text/plain", 415),
])
def test_unreadable_imports_are_refused_whole_and_store_nothing(client, settings, payload, content_type, status):
    before = files_on_disk(settings.data_dir / "history") | files_on_disk(settings.data_dir / "files")
    if content_type == "multipart":
        response = client.post(f"{API}/import", data={"file": (io.BytesIO(payload), "x.json")},
                               content_type="multipart/form-data")
    else:
        response = client.post(f"{API}/import", data=payload, content_type=content_type)
    assert response.status_code == status
    assert response.json["error"]["code"] == status
    after = files_on_disk(settings.data_dir / "history") | files_on_disk(settings.data_dir / "files")
    assert after == before and listing(client) == []


def test_an_invalid_entry_refuses_the_whole_request(client):
    client.post(API, json={"id": "a", "title": "first"})
    good = client.get(f"{API}/a/export").json
    bad = json.loads(json.dumps(good))
    bad["messages"] = [{"id": "x", "role": "robot", "parent_id": None, "created_at": "", "parts": []}]
    bad["conversation"]["settings"] = {"temperature": 9}
    response = client.post(f"{API}/import", json=[good, bad])
    assert response.status_code == 422
    assert "1.messages.0.role" in response.json["error"]["details"]
    assert listing(client) == ["a"]
    bad["messages"] = []
    response = client.post(f"{API}/import", json=[good, bad])
    assert response.status_code == 422 and "1.conversation.settings.temperature" in response.json["error"]["details"]
    assert listing(client) == ["a"]


def test_import_size_limit_is_its_own(tmp_path):
    client = create_app(make_settings(tmp_path, max_import_mb=0.01)).test_client()
    big = [{"title": "x" * 20_000, "mapping": {}}]
    assert client.post(f"{API}/import", json=big).status_code == 413
    response = client.post(f"{API}/import", data={"file": (io.BytesIO(json.dumps(big).encode()), "c.json")},
                           content_type="multipart/form-data")
    assert response.status_code == 413
    assert not files_on_disk(tmp_path / "data" / "history")


def test_entries_with_nothing_shown_are_skipped_and_counted(client):
    export = json.loads((EXPORTS / "chatgpt-tree.json").read_text())
    export.append({"title": "empty", "mapping": {"root": {"id": "root", "message": None, "children": []}}})
    body = client.post(f"{API}/import", json=export).json
    assert body["skipped"]["conversations"] == 1 and len(body["conversations"]) == 1


# -- fork -----------------------------------------------------------------------------------------
def test_fork_copies_the_path_with_new_ids_and_shared_settings(chat, fake):
    chat.post(API, json={"id": "src", "title": "Origin", "system_instruction": "Be kind.",
                         "tools": ["calculator"], "settings": {"temperature": 0.2}})
    first = send(chat, "src", "one")
    send(chat, "src", "two")
    response = chat.post(f"{API}/src/fork", json={"message_id": first["reply"]["id"]})
    assert response.status_code == 201, response.json
    fork = response.json
    assert [m["text"] for m in fork["messages"]] == ["one", first["reply"]["text"]]
    assert not {m["id"] for m in fork["messages"]} & {first["reply"]["id"], first["user_message"]["id"]}
    for key in ("model", "system_instruction", "tools", "settings", "title", "title_source"):
        assert fork[key] == chat.get(f"{API}/src").json[key]
    assert fork["temporary"] is False and fork["message_count"] == 2
    send(chat, fork["id"], "three")  # the fork goes on by itself
    assert chat.get(f"{API}/src").json["message_count"] == 4


def test_fork_options_and_refusals(chat, fake):
    chat.post(API, json={"id": "src"})
    first = send(chat, "src", "hello")
    named = chat.post(f"{API}/src/fork", json={"message_id": first["user_message"]["id"], "id": "copy",
                                              "title": "A copy", "temporary": True}).json
    assert (named["id"], named["title"], named["title_source"], named["temporary"]) == \
        ("copy", "A copy", "user", True)
    assert [m["text"] for m in named["messages"]] == ["hello"]
    again = chat.post(f"{API}/src/fork", json={"message_id": first["user_message"]["id"], "id": "copy"})
    assert again.status_code == 409
    assert chat.post(f"{API}/src/fork", json={"message_id": "nope"}).status_code == 404
    refused = chat.post(f"{API}/src/fork", json={"message_id": first["user_message"]["id"], "extra": 1})
    assert refused.status_code == 422 and "extra" in refused.json["error"]["details"]
    assert chat.post(f"{API}/src/fork", json={}).status_code == 422
    assert sorted(listing(chat)) == ["src"] and listing(chat, "temporary=true") == ["copy"]


def test_title_calls_are_counted_in_usage(chat, fake):
    chat.post(API, json={"id": "billed"})
    send(chat, "billed", "count this title too")
    wait_until(lambda: chat.get(f"{API}/billed").json["title_source"] == "auto")
    wait_until(lambda: chat.get("/api/v1/usage").json["totals"]["calls"] == 2)
    totals = chat.get("/api/v1/usage").json["totals"]
    assert totals["total_tokens"] == fake.billed_totals()["total_tokens"]
    conversation = chat.get("/api/v1/usage?group_by=conversation").json["groups"]
    assert [(g["key"], g["calls"]) for g in conversation] == [("billed", 2)]

