"""A conversation's file: records appended per turn, torn tails, compaction, the first format."""
from __future__ import annotations

import fcntl
import json
import threading

import orjson
import pytest

from apsara.clock import an_hour_ago, now_iso
from apsara.conversations import file_format, locks
from apsara.conversations import store as store_module
from apsara.conversations.journal import record
from apsara.conversations.store import ConversationStore, iso_to_ns

API = "/api/v1/conversations"


def turn(client, cid, text):
    response = client.post(f"{API}/{cid}/messages", json={"text": text})
    assert response.status_code == 201, response.json
    return response.json


def lines_of(path):
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_a_turn_appends_records_and_never_rewrites_the_file(chat, settings, fake):
    chat.post(API, json={"id": "c1"})
    path = settings.data_dir / "history" / "local" / "c1.json"
    turn(chat, "c1", "one")
    before = path.read_bytes()
    inode = path.stat().st_ino
    turn(chat, "c1", "two")
    after = path.read_bytes()
    assert after.startswith(before) and path.stat().st_ino == inode  # appended, not replaced
    added = [json.loads(line) for line in after[len(before):].splitlines()]
    records = [r for r in added if "m" not in r]
    types = [r["type"] for r in records]
    assert types[:2] == ["message", "message"] and types[-1] == "reply" and set(types[2:-1]) <= {"progress"}
    assert [r["seq"] for r in records] == list(range(records[0]["seq"], records[0]["seq"] + len(records)))
    assert len(after) - len(before) < 3000  # the turn's own bytes, not the conversation's
    assert "m" in added[-1]  # every append ends with a mark


def test_a_torn_last_record_is_ignored_then_cut_off_by_the_next_write(chat, settings, fake):
    chat.post(API, json={"id": "c1"})
    first = turn(chat, "c1", "one")
    path = settings.data_dir / "history" / "local" / "c1.json"
    whole = chat.get(f"{API}/c1").json
    with open(path, "ab") as fh:  # a writer killed in the middle of its append
        fh.write(b'{"seq":99,"type":"message","at":"' + now_iso().encode() + b'","message":{"id":"x","ro')
    assert chat.get(f"{API}/c1").json == whole
    assert [c["id"] for c in chat.get(API).json["conversations"]] == ["c1"]
    assert chat.get(API).json["conversations"][0]["message_count"] == 2
    turn(chat, "c1", "two")
    assert all(isinstance(line, dict) for line in lines_of(path))  # every line parses again
    messages = chat.get(f"{API}/c1").json["messages"]
    assert [m["text"] for m in messages][:2] == ["one", first["reply"]["text"]] and len(messages) == 4


def test_a_lost_mark_loses_no_complete_record(chat, settings, fake):
    chat.post(API, json={"id": "c1"})
    turn(chat, "c1", "one")
    path = settings.data_dir / "history" / "local" / "c1.json"
    raw = path.read_bytes()
    cut = raw.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(raw[:cut + 7])  # the reply's record whole, its mark torn
    shown = chat.get(f"{API}/c1").json
    assert shown["messages"][1]["status"] == "complete" and shown["message_count"] == 2
    assert chat.get(API).json["conversations"][0]["message_count"] == 2
    turn(chat, "c1", "two")
    assert chat.get(API).json["conversations"][0]["message_count"] == 4


def test_readers_take_whole_appends_while_a_write_lands(chat, settings, fake):
    """A user message and its reply go to disk in one write, ended by a mark. A reader that
    meets the first records without the mark, while the writer holds the lock, is reading
    as the write lands: it shows what was there before, never the message alone. Once no
    writer holds the lock, whole records with no mark are a crash's and are shown."""
    chat.post(API, json={"id": "c1"})
    turn(chat, "c1", "one")
    store = ConversationStore(settings.data_dir)  # another process's view of the same files
    path = settings.data_dir / "history" / "local" / "c1.json"
    before = store.read("local", "c1")
    reply = before["messages"][-1]
    landing = {"seq": before["seq"] + 1, "type": "message", "at": now_iso(),
               "message": {"id": "m-landing", "role": "user", "parent_id": reply["id"], "created_at": now_iso(),
                           "parts": [{"type": "text", "text": "two"}]}}
    lock = settings.data_dir / "locks" / "local" / "c1.lock"
    with open(lock, "rb") as held:  # another process's writer holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        with open(path, "ab") as fh:
            fh.write(orjson.dumps(landing) + b"\n")  # the user message landed, its reply and mark not yet
        for reader in (store, ConversationStore(settings.data_dir)):  # brought up to date, and read whole
            assert [m["id"] for m in reader.read("local", "c1")["messages"]] == [m["id"] for m in before["messages"]]
        assert [m["text"] for m in chat.get(f"{API}/c1").json["messages"]] == ["one", "Echo: one"]
    # The writer is gone and the mark never came: a crash's whole record, kept.
    assert [m["text"] for m in chat.get(f"{API}/c1").json["messages"]] == ["one", "Echo: one", "two"]
    assert store.read("local", "c1")["messages"][-1]["id"] == "m-landing"
    # A worker reading it for the first time while it holds the lock itself (a change of
    # title, with a compaction) keeps the record too: its own lock is no other writer.
    chat.application.extensions["apsara"].store._cache.clear()
    store_module.COMPACT_MIN_BYTES, floor = 0, store_module.COMPACT_MIN_BYTES
    try:
        assert chat.patch(f"{API}/c1", json={"title": "Kept"}).status_code == 200
    finally:
        store_module.COMPACT_MIN_BYTES = floor
    assert chat.get(API).json["conversations"][0]["message_count"] == 3
    assert [m["id"] for m in ConversationStore(settings.data_dir).read("local", "c1")["messages"]][-1] == "m-landing"
    assert chat.post(f"{API}/c1/messages/m-landing/select").status_code == 200


def encode_first_format(document: dict) -> bytes:
    """A conversation file exactly as the first format wrote it: one JSON document, header on line one."""
    header = orjson.dumps(document["conversation"])
    rest = {k: v for k, v in document.items() if k != "conversation"}
    return b'{"schema_version":1,"conversation":%s' % header + b",\n" + orjson.dumps(rest)[1:] + b"\n"


def test_first_format_files_load_list_and_take_new_turns(chat, settings, fake):
    folder = settings.data_dir / "history" / "local"
    folder.mkdir(parents=True)
    stamp = an_hour_ago()
    document = {"conversation": {"id": "old", "title": "Kept", "created_at": stamp, "updated_at": stamp,
                                 "model": "gemini-3.8-flash", "system_instruction": "", "tools": [],
                                 "settings": {}, "message_count": 2},
                "messages": [{"id": "u1", "role": "user", "parent_id": None, "created_at": stamp,
                              "parts": [{"type": "text", "text": "hello"}]},
                             {"id": "r1", "role": "model", "parent_id": "u1", "created_at": stamp,
                              "parts": [{"type": "text", "text": "hi there"}], "model": "gemini-3.8-flash",
                              "status": "complete"}],
                "active": {"": "u1", "u1": "r1"}}
    path = folder / "old.json"
    path.write_bytes(encode_first_format(document))
    import os

    os.utime(path, ns=(iso_to_ns(stamp),) * 2)
    listed = chat.get(API).json["conversations"]
    assert [(c["id"], c["title"], c["message_count"]) for c in listed] == [("old", "Kept", 2)]
    shown = chat.get(f"{API}/old").json
    assert [m["text"] for m in shown["messages"]] == ["hello", "hi there"]
    events = chat.get(f"{API}/old/messages/r1/events").get_data(as_text=True)
    assert "event: done" in events and "hi there" in events
    turn(chat, "old", "again")  # the first change makes it a snapshot, then appends
    assert lines_of(path)[0]["schema_version"] == 2
    assert [m["text"] for m in chat.get(f"{API}/old").json["messages"]][:3] == ["hello", "hi there", "again"]
    assert fake.last_body()["contents"][0]["parts"][0]["text"] == "hello"


def test_a_first_format_file_whose_first_record_adds_no_message_counts_its_messages(tmp_path):
    stamp = an_hour_ago()
    document = {"conversation": {"id": "old", "title": "", "created_at": stamp, "updated_at": stamp,
                                 "model": "gemini-3.8-flash", "system_instruction": "", "tools": [],
                                 "settings": {}, "message_count": 7},  # wrong: the path holds two
                "messages": [{"id": "u1", "role": "user", "parent_id": None, "created_at": stamp,
                              "parts": [{"type": "text", "text": "hello"}]},
                             {"id": "r1", "role": "model", "parent_id": "u1", "created_at": stamp,
                              "parts": [], "status": "streaming"}],
                "active": {"": "u1", "u1": "r1"}}
    folder = tmp_path / "history" / "local"
    folder.mkdir(parents=True)
    (folder / "old.json").write_bytes(encode_first_format(document))
    store = ConversationStore(tmp_path)
    with store.locked("local", "old", existing=True):  # a reply's end, the first record
        store.append("local", "old", [record(0, "reply", now_iso(), id="r1", fields={"status": "interrupted"})])
    assert store.read_header("local", "old")["message_count"] == 2
    assert store.read("local", "old")["conversation"]["message_count"] == 2


def _document(texts: list[str]) -> dict:
    stamp = now_iso()
    messages, active, parent = [], {}, None
    for n, text in enumerate(texts):
        message = {"id": f"m{n}", "role": "user" if n % 2 == 0 else "model", "parent_id": parent,
                   "created_at": stamp, "parts": [{"type": "text", "text": text}]}
        if n % 2:
            message["status"] = "complete"
        messages.append(message)
        active[parent or ""] = message["id"]
        parent = message["id"]
    header = {"id": "c1", "title": "", "created_at": stamp, "updated_at": stamp, "model": "gemini-3.8-flash",
              "system_instruction": "", "tools": [], "settings": {}, "message_count": len(messages)}
    return {"conversation": header, "messages": messages, "active": active, "seq": len(texts)}


def test_a_file_replaced_under_its_old_inode_number_is_read_afresh(tmp_path):
    # Two compactions in another process, or a deletion and a new conversation of the same id,
    # can hand the file a freed inode number back: what this process read before must not
    # take the new file's bytes for records appended to the old one.
    store = ConversationStore(tmp_path)
    with store.locked("local", "c1"):
        store.write("local", "c1", _document(["old question", "old answer"]))
    assert [m["id"] for m in store.read("local", "c1")["messages"]] == ["m0", "m1"]  # now cached
    path = store.path("local", "c1")
    inode = path.stat().st_ino
    replacement = file_format.encode(_document([f"new text {n} " * 5 for n in range(6)]))
    with open(path, "r+b") as fh:  # another file, the same inode number
        fh.write(replacement)
        fh.truncate()
    assert path.stat().st_ino == inode
    read = store.read("local", "c1")
    assert [m["id"] for m in read["messages"]] == [f"m{n}" for n in range(6)]
    assert read["messages"][0]["parts"][0]["text"].startswith("new text 0")


def test_a_file_made_again_from_the_same_export_under_its_old_inode_number_is_read_afresh(tmp_path):
    # The same first line (the same header and snapshot seq, imported again after a deletion)
    # but not the same file: what this process read beyond it must not be kept.
    store = ConversationStore(tmp_path)
    exported = file_format.encode(_document(["question", "answer"]))
    path = store.path("local", "c1")
    path.parent.mkdir(parents=True)
    path.write_bytes(exported)
    with store.locked("local", "c1"):
        store.append("local", "c1", [record(0, "conversation", now_iso(), conversation={
            **_document([])["conversation"], "title": "renamed before the deletion"})])
    assert store.read("local", "c1")["conversation"]["title"] == "renamed before the deletion"  # cached
    inode = path.stat().st_ino
    with open(path, "r+b") as fh:  # the export again, the same inode number
        fh.write(exported)
        fh.truncate()
    assert path.stat().st_ino == inode
    assert store.read("local", "c1")["conversation"]["title"] == ""


def test_compaction_while_readers_read(chat, settings, fake, monkeypatch):
    monkeypatch.setattr(store_module, "COMPACT_MIN_BYTES", 1500)
    chat.post(API, json={"id": "c1"})
    path = settings.data_dir / "history" / "local" / "c1.json"
    inodes, problems, counts = [path.stat().st_ino], [], []
    done = threading.Event()

    def reader():
        last = 0
        while not done.is_set():
            view = chat.get(f"{API}/c1")
            if view.status_code != 200:
                problems.append(view.status_code)
                continue
            count = len(view.json["messages"])
            if count < last or count % 2:
                problems.append(count)
            last = count
            listed = chat.get(API).json["conversations"]
            if listed[0]["message_count"] % 2:
                problems.append(("listing", listed[0]["message_count"]))
            counts.append(count)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for n in range(25):
        turn(chat, "c1", f"message {n} " + "padding " * 20)
        inodes.append(path.stat().st_ino)
    done.set()
    for thread in readers:
        thread.join()
    assert problems == []
    # A compaction replaces the file: its inode changes (a number freed earlier may come back).
    compactions = sum(1 for before, after in zip(inodes, inodes[1:]) if before != after)
    assert compactions >= 2, "the file was not compacted while read"
    assert len(chat.get(f"{API}/c1").json["messages"]) == 50
    assert chat.get(API).json["conversations"][0]["message_count"] == 50
    assert ConversationStore(settings.data_dir).read("local", "c1")["conversation"]["message_count"] == 50


def test_no_lock_file_is_left_by_a_missing_conversation_or_a_delete(chat, settings, fake):
    locks = settings.data_dir / "locks"
    assert chat.post(f"{API}/nope/messages", json={"text": "hi"}).status_code == 404
    assert chat.patch(f"{API}/nope", json={"title": "x"}).status_code == 404
    assert chat.delete(f"{API}/nope").status_code == 404
    assert not list(locks.rglob("*.lock")) if locks.exists() else True
    chat.post(API, json={"id": "c1"})
    turn(chat, "c1", "hi")
    assert chat.delete(f"{API}/c1").status_code == 204
    assert [p.name for p in locks.rglob("*.lock") if not p.name.startswith(".")] == []


def test_token_count_of_an_auto_conversation_uses_the_model_auto_would_pick(chat, fake):
    chat.post(API, json={"id": "a1", "model": "auto"})
    turn(chat, "a1", "hello there!")
    counted = chat.get(f"{API}/a1/tokens")
    assert counted.status_code == 200, counted.json
    assert counted.json["model"] != "auto" and counted.json["total_tokens"] > 0


def test_a_reply_compacted_long_after_it_ended_still_replays(chat, settings, fake, monkeypatch):
    from apsara.conversations import manager as manager_module

    monkeypatch.setattr(store_module, "COMPACT_MIN_BYTES", 1500)
    monkeypatch.setattr(manager_module, "RESUME_WINDOW_S", 0.0)
    chat.post(API, json={"id": "c1"})
    first = turn(chat, "c1", "the first question")["reply"]
    original = chat.get(f"{API}/c1/messages/{first['id']}/events").get_data(as_text=True)
    path = settings.data_dir / "history" / "local" / "c1.json"
    inode = path.stat().st_ino
    n = 0
    while path.stat().st_ino == inode:  # until a compaction
        turn(chat, "c1", f"more {n} " + "padding " * 30)
        n += 1
    snapshot = lines_of(path)[1]["messages"]
    assert "_events" not in next(m for m in snapshot if m["id"] == first["id"])  # left behind
    replayed = chat.get(f"{API}/c1/messages/{first['id']}/events").get_data(as_text=True)
    from tests.conftest import parse_sse

    before, after = parse_sse(original)[0], parse_sse(replayed)[0]
    assert after[0] == before[0]  # reply_start, with its id
    assert after[-1] == before[-1]  # done, with its id and the stored reply
    assert "".join(d["text"] for e, _, d in after if e == "delta") == first["text"]


def test_writers_in_one_process_take_turns_without_polling_the_file_lock(tmp_path, monkeypatch):
    """A reply that ends while its turn's commit still holds the lock waits on this process's
    own lock, which hands over at once, not on the file's, which is polled."""
    store = ConversationStore(tmp_path)
    with store.locked("local", "c1"):
        store.write("local", "c1", {"conversation": {"id": "c1", "updated_at": now_iso(), "n": 0},
                                    "messages": [], "active": {}})
    polled = []
    real_acquire = locks.flock_waiting

    def acquire(fd, timeout_s):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            polled.append(fd)
            real_acquire(fd, timeout_s)

    monkeypatch.setattr(locks, "flock_waiting", acquire)

    def writer():
        for _ in range(50):
            with store.locked("local", "c1"):
                document = store.read("local", "c1")
                document["conversation"]["n"] += 1
                store.write("local", "c1", document)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.read("local", "c1")["conversation"]["n"] == 200
    assert polled == []
    assert store._locks._local_locks == {}  # nothing is kept of a lock nobody holds or waits for


def test_the_paths_a_store_keeps_made_are_its_own_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "KNOWN_PATHS", 3)
    store = ConversationStore(tmp_path)
    first = store.path("alice", "c1")
    assert store.path("alice", "c1") is first  # made once
    assert first == tmp_path / "history" / "alice" / "c1.json"
    assert store.path("bob", "c1") == tmp_path / "history" / "bob" / "c1.json"
    assert store._lock_path("bob", "c1") == tmp_path / "locks" / "bob" / "c1.lock"
    for bad_owner, bad_id in (("alice", "../bob/c1"), ("..", "c1"), ("alice", "."), ("a/b", "c1"), ("alice", "c\x00"),
                              ("alice", ["c1"]), (["alice"], "c1"), ("alice", None)):
        with pytest.raises(store_module.InvalidId):
            store.path(bad_owner, bad_id)
        with pytest.raises(store_module.InvalidId):
            store._lock_path(bad_owner, bad_id)
    for n in range(10):
        store.path("alice", f"n{n}")
        assert len(store._paths) <= 3
