"""A change the disk did not keep: the conversation's fsync fails (EIO, or a full volume that
only says so then). The records are taken back, the client is told nothing was kept, and
sending again stores the message once."""
from __future__ import annotations

import errno
import os
import sqlite3
import time

import orjson
import pytest

from apsara.clock import new_id, now_iso
from apsara.conversations.journal import record
from apsara.conversations.store import ConversationStore, NotKept

API = "/api/v1/conversations"


def refuse_fsyncs(monkeypatch, path, which: set[int]):
    """The fsyncs of `path` numbered in `which` (1: the first from now) fail with EIO."""
    real, seen = os.fsync, []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            seen.append(fd)
            if len(seen) in which:
                raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def records(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def texts(client, cid="c1") -> list[str]:
    return [m["text"] for m in client.get(f"{API}/{cid}").json["messages"]]


@pytest.mark.parametrize("stream", [False, True])
def test_a_message_the_disk_did_not_keep_is_refused_left_out_and_stored_once_when_sent_again(
        chat, chat_app, fake, monkeypatch, stream):
    store = chat_app.extensions["apsara"].manager.store
    for cid in ("c1", "c2"):
        assert chat.post(API, json={"id": cid}).status_code == 201
    assert chat.post(f"{API}/c1/messages", json={"text": "first"}).status_code == 201
    time.sleep(0.01)
    assert chat.post(f"{API}/c2/messages", json={"text": "newest"}).status_code == 201
    path = store.path("local", "c1")
    before, listed = path.read_bytes(), [c["id"] for c in chat.get(API).json["conversations"]]
    assert listed == ["c2", "c1"]

    refuse_fsyncs(monkeypatch, path, {1})
    response = chat.post(f"{API}/c1/messages", json={"text": "lost words", "stream": stream})
    assert response.status_code == 503 and response.mimetype == "application/json"
    assert response.json["error"]["status"] == "UNAVAILABLE" and "nothing was kept" in response.json["error"]["message"]
    assert response.headers["Retry-After"] == "1"
    time.sleep(0.3)  # the reply's job, stopped: it must store nothing as it ends
    assert path.read_bytes() == before
    assert texts(chat) == ["first", "Echo: first"]
    assert chat.get(API, query_string={"q": "lost words"}).json["conversations"] == []
    assert [c["id"] for c in chat.get(API).json["conversations"]] == listed

    response = chat.post(f"{API}/c1/messages", json={"text": "lost words"})
    assert response.status_code == 201, response.json
    assert texts(chat) == ["first", "Echo: first", "lost words", "Echo: lost words"]
    assert [h["id"] for h in chat.get(API, query_string={"q": "lost words"}).json["conversations"]] == ["c1"]
    assert [c["id"] for c in chat.get(API).json["conversations"]] == ["c1", "c2"]
    ids = {m["id"] for m in chat.get(f"{API}/c1").json["messages"]}
    assert all(r["id"] in ids for r in records(path) if r.get("type") in ("reply", "progress"))


def test_a_reply_end_the_disk_did_not_keep_is_stored_once_on_the_next_try(chat, chat_app, fake, monkeypatch):
    store = chat_app.extensions["apsara"].manager.store
    assert chat.post(API, json={"id": "c1"}).status_code == 201
    assert chat.post(f"{API}/c1/messages", json={"text": "first"}).status_code == 201
    path = store.path("local", "c1")
    refused = refuse_fsyncs(monkeypatch, path, {2})  # 1: the user message's; 2: the reply's end
    response = chat.post(f"{API}/c1/messages", json={"text": "second"})
    assert response.status_code == 201 and response.json["reply"]["status"] == "complete"
    assert len(refused) == 3  # the user message's, the end's, the end tried again
    reply_id = response.json["reply"]["id"]
    # Its progress may be checkpointed while the end waits to be tried again; the end is stored once.
    assert [r["type"] for r in records(path) if r.get("id") == reply_id and r["type"] != "progress"] == ["reply"]
    assert texts(chat)[-2:] == ["second", "Echo: second"]


def _user_message(text: str) -> list[dict]:
    at = now_iso()
    return [record(0, "message", at, message={"id": new_id("m"), "role": "user", "parent_id": None,
                                              "created_at": at, "parts": [{"type": "text", "text": text}]})]


def test_a_reader_that_saw_records_taken_back_reads_the_file_again_even_once_it_has_regrown_to_that_length(
        tmp_path, monkeypatch):
    """Another process reads as the fsync is failing, then the same message is sent again: the
    file grows back to the very length that reader stopped at. It must not take the file for
    unchanged, keeping a message that is not there and missing the one that is."""
    writer, other = ConversationStore(tmp_path), ConversationStore(tmp_path)  # two processes' stores
    stamp = now_iso()
    writer.write("local", "c1", {"conversation": {"id": "c1", "title": "", "created_at": stamp, "updated_at": stamp,
                                                  "message_count": 0, "model": "m", "tools": [], "settings": {},
                                                  "archived": False, "pinned": False, "temporary": False},
                                 "messages": [], "active": {}, "seq": 0})
    path, real, seen = writer.path("local", "c1"), os.fsync, {}

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(path) and not seen:
            seen["document"], seen["position"] = other.load("local", "c1")  # the records are in the file now
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with writer.locked("local", "c1"), pytest.raises(NotKept):
        writer.append("local", "c1", _user_message("hello again"), message_count=1)
    assert [m["parts"][0]["text"] for m in seen["document"]["messages"]] == ["hello again"]
    time.sleep(0.002)  # another time stamp, of the same length
    with writer.locked("local", "c1"):
        writer.append("local", "c1", _user_message("hello again"), message_count=1)
    assert os.path.getsize(path) == seen["position"][1]  # the same length as what was taken back
    truth = [m["id"] for m in writer.read("local", "c1")["messages"]]
    assert other.may_have_news("local", "c1", seen["position"])
    assert other.follow("local", "c1", seen["position"]) == (None, None)  # read it again whole
    assert [m["id"] for m in other.load("local", "c1")[0]["messages"]] == truth
    assert truth != [m["id"] for m in seen["document"]["messages"]]


def test_a_take_back_whose_index_write_fails_still_answers_that_nothing_was_kept(chat, chat_app, monkeypatch):
    store = chat_app.extensions["apsara"].manager.store
    assert chat.post(API, json={"id": "c1"}).status_code == 201
    assert chat.post(f"{API}/c1/messages", json={"text": "first"}).status_code == 201
    path = store.path("local", "c1")
    before = path.read_bytes()

    def index_refused(owner, conversation_id):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_index_whole", index_refused)
    refuse_fsyncs(monkeypatch, path, {1})
    response = chat.post(f"{API}/c1/messages", json={"text": "lost words"})
    assert response.status_code == 503 and "nothing was kept" in response.json["error"]["message"]
    time.sleep(0.3)
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert chat.post(f"{API}/c1/messages", json={"text": "lost words"}).status_code == 201
    assert texts(chat) == ["first", "Echo: first", "lost words", "Echo: lost words"]
