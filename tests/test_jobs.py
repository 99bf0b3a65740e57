"""Replies as jobs, in one process: follow a reply's events, resume after an id, stop it."""
from __future__ import annotations

import threading
import time

import pytest

from apsara.testing.fake_gemini import Reply
from apsara.turns import jobs as jobs_module
from tests.conftest import parse_sse

# Every test here runs on both stores: the files and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")

API = "/api/v1/conversations"


def new_conversation(client, cid="c1", **fields):
    response = client.post(API, json={"id": cid, **fields})
    assert response.status_code == 201, response.json
    return response.json


def events_of(client, cid, reply_id, **kwargs):
    response = client.get(f"{API}/{cid}/messages/{reply_id}/events", **kwargs)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/event-stream"
    return parse_sse(response.get_data(as_text=True))[0]


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


class Streaming:
    """A streamed send read in a background thread, as a browser would read it."""

    def __init__(self, client, cid, text):
        self.raw = b""
        self.response = client.post(f"{API}/{cid}/messages", json={"text": text, "stream": True}, buffered=False)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for chunk in self.response.response:
            self.raw += chunk

    def events(self):
        return parse_sse(self.raw.decode())[0]

    def finish(self, timeout=10):
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.events()


def test_a_finished_reply_replays_its_events_with_the_same_ids(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=["one", " two", " three"], grounding={
        "webSearchQueries": ["q"], "groundingChunks": [{"web": {"uri": "https://example.org", "title": "Ex"}}]}))
    original = parse_sse(chat.post(f"{API}/c1/messages", json={"text": "go", "stream": True})
                         .get_data(as_text=True))[0]
    reply_id = original[1][2]["id"]
    assert [e[1] for e in original] == list(range(1, len(original) + 1))
    replayed = events_of(chat, "c1", reply_id)
    assert replayed == original[1:]  # from reply_start on: same names, ids and data
    after = events_of(chat, "c1", reply_id, headers={"Last-Event-ID": "3"})
    assert after == [e for e in original if e[1] > 3]
    assert events_of(chat, "c1", reply_id, query_string={"after": 4}) == [e for e in original if e[1] > 4]
    # the header wins over the query
    assert events_of(chat, "c1", reply_id, query_string={"after": 1},
                     headers={"Last-Event-ID": "5"}) == [e for e in original if e[1] > 5]
    assert events_of(chat, "c1", reply_id, headers={"Last-Event-ID": "99"}) == []


def test_a_reply_sent_without_streaming_has_events_too(chat, fake):
    new_conversation(chat)
    reply = chat.post(f"{API}/c1/messages", json={"text": "hi"}).json["reply"]
    events = events_of(chat, "c1", reply["id"])
    assert [name for name, _, _ in events] == ["reply_start"] + ["delta"] * (len(events) - 2) + ["done"]
    assert events[0][1] == 2 and events[-1][2] == reply
    assert "".join(d["text"] for n, _, d in events if n == "delta") == reply["text"]


def test_resume_a_live_reply_then_follow_it_to_the_end(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["first", " second", " third"], hold=gate))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "delta" for e in stream.events()))
    reply_id = stream.events()[1][2]["id"]
    # a reloaded page: the conversation shows the reply streaming with what arrived, and where it is
    shown = wait_until(lambda: (m := chat.get(f"{API}/c1").json["messages"][1])["text"] == "first" and m)
    assert shown["status"] == "streaming" and shown["last_event_id"] == 3
    resumed = {}

    def follow():
        response = chat.get(f"{API}/c1/messages/{reply_id}/events", headers={"Last-Event-ID": "3"})
        resumed["events"] = parse_sse(response.get_data(as_text=True))[0]

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.2)
    gate.set()
    follower.join(10)
    original = stream.finish()
    assert resumed["events"] == [e for e in original if e[1] > 3]
    assert resumed["events"][-1][0] == "done" and resumed["events"][-1][2]["text"] == "first second third"


def test_stop_keeps_what_arrived_ends_the_stream_and_frees_the_conversation(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["read this", " never this"], hold=gate))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "delta" for e in stream.events()))
    reply_id = stream.events()[1][2]["id"]
    started = time.monotonic()
    stopped = chat.post(f"{API}/c1/messages/{reply_id}/stop")
    assert stopped.status_code == 200
    assert time.monotonic() - started < 1.0
    reply = stopped.json["reply"]
    assert reply["status"] == "stopped" and reply["text"] == "read this"
    wait_until(lambda: fake.closed_streams)  # Gemini's connection was closed: it stops generating
    events = stream.finish()
    assert events[-1][0] == "done" and events[-1][2] == reply
    gate.set()
    # the next message goes at once, and the stopped text is context for it
    assert chat.post(f"{API}/c1/messages", json={"text": "go on"}).status_code == 201
    contents = fake.last_body()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0]["text"] == "read this"
    # stopping again, or stopping a finished reply: 200, unchanged
    again = chat.post(f"{API}/c1/messages/{reply_id}/stop")
    assert again.status_code == 200 and again.json["reply"] == chat.get(f"{API}/c1").json["messages"][1]


def test_a_stopped_reply_with_nothing_in_it_is_not_context(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=[{"text": "pondering", "thought": True}, "never"], hold=gate))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "thought" for e in stream.events()))
    reply_id = stream.events()[1][2]["id"]
    assert chat.post(f"{API}/c1/messages/{reply_id}/stop").json["reply"]["status"] == "stopped"
    stream.finish()
    gate.set()
    chat.post(f"{API}/c1/messages", json={"text": "again"})
    assert [c["role"] for c in fake.last_body()["contents"]] == ["user"]


def test_a_non_streamed_send_that_is_stopped_answers_201_with_it(chat, fake):
    new_conversation(chat)
    fake.push(Reply(parts=["slow"], delay_s=5))
    result = {}
    sender = threading.Thread(target=lambda: result.update(
        response=chat.post(f"{API}/c1/messages", json={"text": "go"})))
    sender.start()
    reply = wait_until(lambda: (m := chat.get(f"{API}/c1").json["messages"])[1:] and m[1])
    assert chat.post(f"{API}/c1/messages/{reply['id']}/stop").status_code == 200
    sender.join(5)
    assert result["response"].status_code == 201
    assert result["response"].json["reply"]["status"] == "stopped"


def test_unknown_reply_and_user_message_ids_are_404_on_both_endpoints(chat, fake):
    new_conversation(chat)
    sent = chat.post(f"{API}/c1/messages", json={"text": "hi"}).json
    for message_id in ("nope", sent["user_message"]["id"]):
        assert chat.get(f"{API}/c1/messages/{message_id}/events").status_code == 404
        assert chat.post(f"{API}/c1/messages/{message_id}/stop").status_code == 404
    assert chat.get(f"{API}/zz/messages/{sent['reply']['id']}/events").status_code == 404
    bad = chat.get(f"{API}/c1/messages/{sent['reply']['id']}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422
    assert chat.get(f"{API}/c1/messages/{sent['reply']['id']}/events?after=-1").status_code == 422



def test_deleting_the_conversation_stops_its_reply(chat, fake):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["one", " two"], hold=gate))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "delta" for e in stream.events()))
    assert chat.delete(f"{API}/c1").status_code == 204
    wait_until(lambda: fake.closed_streams)  # Gemini stops writing (and billing) a reply nobody can see
    assert stream.finish()[-1][0] == "done"
    gate.set()
    assert chat.get(f"{API}/c1").status_code == 404


@pytest.mark.parametrize("deleted_by", ["this process", "another process"])
def test_a_conversation_deleted_and_made_again_under_its_id_stops_the_old_reply(chat, chat_app, fake, deleted_by):
    new_conversation(chat)
    gate = threading.Event()
    fake.push(Reply(parts=["one", " two"], hold=gate))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "delta" for e in stream.events()))
    if deleted_by == "this process":
        assert chat.delete(f"{API}/c1").status_code == 204
    else:  # its files changed under this process's jobs, which learn of it by looking
        chat_app.extensions["apsara"].chat.planner.delete_conversation("local", "c1")
    new_conversation(chat)  # at once, before any look at the old one
    started = time.monotonic()
    wait_until(lambda: fake.closed_streams)
    assert fake.closed_streams[0] - started < 1.0
    assert stream.finish()[-1][0] == "done"
    gate.set()
    assert chat.get(f"{API}/c1").json["messages"] == []

def test_the_jobs_watcher_ends_when_idle_and_the_next_reply_starts_another(chat, chat_app, fake, monkeypatch):
    from apsara.turns import jobs as jobs_module

    monkeypatch.setattr(jobs_module, "WATCHER_IDLE_S", 0.1)
    registry = chat_app.extensions["apsara"].chat.jobs
    new_conversation(chat)
    assert chat.post(f"{API}/c1/messages", json={"text": "one"}).status_code == 201
    deadline = time.monotonic() + 5
    while registry._watcher is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert registry._watcher is None, "an idle watcher kept running (and its app alive)"
    # The next reply has a watcher again: it checkpoints what a slow stream received.
    fake.push(Reply(parts=["slow", " reply"], chunk_delay_s=0.6))
    response = chat.post(f"{API}/c1/messages", json={"text": "two", "stream": True}, buffered=False)
    stream = response.response
    first = next(stream)
    assert registry._watcher is not None and registry._watcher.is_alive()
    rest = b"".join(stream)
    events = parse_sse((first + rest).decode())[0]
    assert events[-1][0] == "done" and events[-1][2]["text"] == "slow reply"


def test_a_reply_reads_back_no_checkpoint_of_its_own_yet_sees_a_stop_recorded_between_them(chat, chat_app, fake,
                                                                                         monkeypatch):
    services = chat_app.extensions["apsara"]
    store = services.manager.store
    read_back = []
    original = store.follow

    def follow(*args):
        records, position = original(*args)
        read_back.extend(records or [])
        return records, position

    monkeypatch.setattr(store, "follow", follow)
    monkeypatch.setattr(store, "listen_for_stops", lambda on_stop, wanted: None)  # the stop is found by asking
    new_conversation(chat)
    fake.push(Reply(parts=[f" {n}" for n in range(200)], chunk_delay_s=0.05))  # 10 s, unless stopped
    stream = Streaming(chat, "c1", "go")
    reply_id = wait_until(lambda: next((e[2]["id"] for e in stream.events() if e[0] == "reply_start"), None))
    wait_until(lambda: len(chat.get(f"{API}/c1").json["messages"][-1]["parts"]) > 0)  # checkpointed
    time.sleep(0.6)  # more checkpoints, and the stop checks after them
    assert not [r for r in read_back if r["type"] == "progress"]
    # A stop written to the file by another process, between two checkpoints, is still seen.
    services.manager.request_stop("local", "c1", reply_id)
    events = stream.finish()
    assert events[-1][0] == "done" and events[-1][2]["status"] == "stopped"
    assert any(r["type"] == "stop" for r in read_back)
    assert chat.get(f"{API}/c1").json["messages"][-1]["status"] == "stopped"


def test_a_reply_whose_thread_cannot_start_ends_as_an_error_and_the_next_message_is_taken(chat, fake, monkeypatch):
    # Its records are written before its thread starts: left "streaming" by a live process, the
    # reply would have made the conversation refuse every next message until a restart.
    new_conversation(chat)
    start = threading.Thread.start

    def no_thread_for_replies(thread):
        if thread.name == "apsara-reply":
            raise RuntimeError("can't start new thread")
        return start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_thread_for_replies)
    assert chat.post(f"{API}/c1/messages", json={"text": "first"}).status_code == 500
    monkeypatch.undo()
    # The files keep the turn with its reply ended as an error; PostgreSQL rolls the turn back.
    assert [m.get("status") for m in chat.get(f"{API}/c1").json["messages"]] in ([None, "error"], [])
    response = chat.post(f"{API}/c1/messages", json={"text": "again"})
    assert response.status_code == 201 and response.json["reply"]["status"] == "complete"
    assert len(fake.generate_requests()) == 1


def failing_appends(monkeypatch, store, kind: str, times: int | None, error=None):
    """Make the store's appends of `kind` records fail (by default for a passing reason, such as
    a full disk), `times` times (None: until the returned switch is turned off)."""
    original, failed, on = store.append, [], [True]
    error = error or store.transient_errors[0]("no room left")

    def append(owner, conversation_id, records, **kwargs):
        if on[0] and any(r["type"] == kind for r in records) and (times is None or len(failed) < times):
            failed.append(kind)
            raise error
        return original(owner, conversation_id, records, **kwargs)

    monkeypatch.setattr(store, "append", append)
    return failed, on


def test_a_checkpoint_that_could_not_be_written_goes_with_the_next(chat, chat_app, fake, monkeypatch):
    new_conversation(chat)
    failed, _ = failing_appends(monkeypatch, chat_app.extensions["apsara"].manager.store, "progress", 1)
    fake.push(Reply(parts=["one ", "two ", "three ", "four ", "five"], chunk_delay_s=0.35))
    events = Streaming(chat, "c1", "count").finish()
    assert failed and events[-1][0] == "done"
    stored = chat.get(f"{API}/c1").json["messages"][1]
    assert (stored["status"], stored["text"]) == ("complete", "one two three four five")


def test_a_reply_gemini_has_not_answered_yet_writes_nothing_then_its_first_words_within_a_window(
        chat, chat_app, fake, monkeypatch):
    # reply_start says nothing the stored reply does not: a burst of streams waiting for Gemini
    # wrote one record each for it. The first words are kept as before: within a window.
    store = chat_app.extensions["apsara"].manager.store
    original, progress = store.append, []

    def append(owner, conversation_id, records, **kwargs):
        mark = original(owner, conversation_id, records, **kwargs)
        progress.extend((time.monotonic(), r) for r in records if r["type"] == "progress")
        return mark

    monkeypatch.setattr(store, "append", append)
    new_conversation(chat)
    held = threading.Event()
    fake.push(Reply(parts=["first words", " more"], delay_s=0.8, hold=held))
    stream = Streaming(chat, "c1", "go")
    wait_until(lambda: any(e[0] == "reply_start" for e in stream.events()))
    time.sleep(0.6)  # over two checkpoint windows with reply_start alone
    assert progress == []
    seen = wait_until(lambda: next((time.monotonic() for e in stream.events() if e[0] == "delta"), None))
    wait_until(lambda: progress, timeout=2.0)
    written_at, record = progress[0]
    assert written_at - seen < jobs_module.CHECKPOINT_S + 0.25
    assert [e[1] for e in record["events"]] == ["reply_start", "delta"]
    assert chat.get(f"{API}/c1").json["messages"][-1]["text"] == "first words"
    held.set()
    assert stream.finish()[-1][0] == "done"


def test_a_turn_whose_commit_failed_after_its_write_has_its_reply_ended_only_where_the_turn_is_stored(
        chat, chat_app, fake, monkeypatch, store_kind):
    # The reply's Gemini call starts once the records are written, before the commit ends (the
    # fsync, PostgreSQL's COMMIT). A commit that fails then may or may not have stored the turn:
    # the reply's end reads the conversation to tell, and stores nothing for a turn that is not there.
    store = chat_app.extensions["apsara"].manager.store
    new_conversation(chat)
    assert chat.post(f"{API}/c1/messages", json={"text": "first"}).status_code == 201
    before = chat.get(f"{API}/c1").json
    original = store.append

    def append_then_fail(owner, conversation_id, records, **kwargs):
        mark = original(owner, conversation_id, records, **kwargs)
        if any(r["type"] == "message" for r in records):
            raise store.transient_errors[0]("the connection was lost")
        return mark

    monkeypatch.setattr(store, "append", append_then_fail)
    assert chat.post(f"{API}/c1/messages", json={"text": "second"}).status_code >= 500
    monkeypatch.undo()
    if store_kind == "postgresql":  # rolled back with its transaction: its reply's end must store nothing
        time.sleep(0.5)
        after = chat.get(f"{API}/c1").json
        assert after["messages"] == before["messages"]
        assert after["updated_at"] == before["updated_at"]
    else:  # on disk all the same: its reply's end is stored (stopped, or complete when Gemini was quicker)
        reply = wait_until(lambda: (m := chat.get(f"{API}/c1").json["messages"][-1])["status"] != "streaming" and m)
        assert reply["status"] in ("stopped", "complete")
        assert [m["text"] for m in chat.get(f"{API}/c1").json["messages"]][:3] == ["first", "Echo: first", "second"]
    assert chat.post(f"{API}/c1/messages", json={"text": "third"}).status_code == 201


def test_a_reply_end_that_fails_once_is_stored_on_the_next_try(chat, chat_app, fake, monkeypatch):
    new_conversation(chat)
    failed, _ = failing_appends(monkeypatch, chat_app.extensions["apsara"].manager.store, "reply", 1)
    response = chat.post(f"{API}/c1/messages", json={"text": "hi"})
    assert failed and response.status_code == 201
    stored = chat.get(f"{API}/c1").json["messages"][1]
    assert stored["status"] == "complete" and stored["text"] == response.json["reply"]["text"]


def test_a_reply_end_that_keeps_failing_is_told_and_stored_once_the_disk_has_room(chat, chat_app, fake, monkeypatch):
    # What the user read since the last checkpoint is only in memory: the end is tried until it lands.
    from apsara.turns import runner

    monkeypatch.setattr(runner, "END_RETRY_DELAYS_S", (0.01, 0.01, 0.1))
    new_conversation(chat)
    failed, disk_full = failing_appends(monkeypatch, chat_app.extensions["apsara"].manager.store, "reply", None)
    fake.push(Reply(parts=["what ", "was ", "read"], chunk_delay_s=0.35))
    events = Streaming(chat, "c1", "hi").finish()
    assert len(failed) >= 3 and events[-1][0] == "error"  # told, not kept waiting on the disk
    # Every process sees the reply's writer alive, still trying: the conversation waits for it.
    assert chat.get(f"{API}/c1").json["messages"][1]["status"] == "streaming"
    assert chat.post(f"{API}/c1/messages", json={"text": "too soon"}).status_code == 409
    disk_full[0] = False
    reply = wait_until(lambda: next((m for m in chat.get(f"{API}/c1").json["messages"][1:]
                                     if m["status"] != "streaming"), None))
    assert (reply["status"], reply["text"]) == ("complete", "what was read")
    # Replayed as it was stored: the error its followers were told meanwhile is not part of it.
    replayed, _ = parse_sse(chat.get(f"{API}/c1/messages/{reply['id']}/events").get_data(as_text=True))
    assert [name for name, _, _ in replayed].count("error") == 0 and replayed[-1][0] == "done"
    assert replayed[-1][2]["text"] == "what was read"
    assert [i for _, i, _ in replayed] == sorted({i for _, i, _ in replayed})
    assert chat.post(f"{API}/c1/messages", json={"text": "again"}).status_code == 201


def test_a_reply_whose_end_fails_for_no_passing_reason_is_given_up_and_the_next_message_is_taken(
        chat, chat_app, fake, monkeypatch):
    # Left "streaming" with this live process as its writer, the reply would make the
    # conversation refuse every next message until a restart.
    new_conversation(chat)
    failed, failing = failing_appends(monkeypatch, chat_app.extensions["apsara"].manager.store, "reply", None,
                                      error=RuntimeError("a bug"))
    fake.push(Reply(parts=["what ", "was ", "read"], chunk_delay_s=0.35))
    events = Streaming(chat, "c1", "hi").finish()
    assert len(failed) == 1 and events[-1][0] == "error"
    failing[0] = False
    # What was checkpointed is kept, as for a writer that died.
    reply = chat.get(f"{API}/c1").json["messages"][1]
    assert reply["status"] == "interrupted" and reply["text"].startswith("what ")
    response = chat.post(f"{API}/c1/messages", json={"text": "again"})
    assert response.status_code == 201, response.json
    messages = chat.get(f"{API}/c1").json["messages"]
    assert [m.get("status") for m in messages] == [None, "interrupted", None, "complete"]
@pytest.mark.parametrize("streamed", [True, False])
def test_a_stop_while_gemini_thinks_closes_the_request_at_once(chat, chat_app, fake, streamed):
    # No response yet (a thinking model, or any reply asked for whole): the request itself is closed.
    new_conversation(chat)
    fake.push(Reply(parts=["late ", "answer"], delay_s=8.0))
    answer = {}
    sender = threading.Thread(target=lambda: answer.update(
        response=chat.post(f"{API}/c1/messages", json={"text": "think hard", "stream": streamed})), daemon=True)
    sender.start()
    jobs = chat_app.extensions["apsara"].chat.jobs
    job = wait_until(lambda: next(iter(jobs._jobs.values()), None))
    wait_until(lambda: fake.generate_requests())  # on the wire; Gemini is thinking
    started = time.monotonic()
    stopped = chat.post(f"{API}/c1/messages/{job.reply_id}/stop")
    assert stopped.status_code == 200 and stopped.json["reply"]["status"] == "stopped"
    assert time.monotonic() - started < 1.0
    wait_until(lambda: fake.closed_streams)  # Gemini saw the connection go: it stops thinking
    assert fake.closed_streams[0] - started < 1.0
    sender.join(5)
    assert answer["response"].status_code in (200, 201)
    assert chat.post(f"{API}/c1/messages", json={"text": "next"}).status_code == 201


def test_a_slow_reply_end_holds_up_no_other_replys_checkpoints(chat, chat_app, fake, monkeypatch):
    # Storing a reply's end may wait (its conversation's lock, a full disk): meanwhile the other
    # replies of the process must still be checkpointed, and their writers still heartbeat.
    manager = chat_app.extensions["apsara"].manager
    jobs = chat_app.extensions["apsara"].chat.jobs
    finish, released = manager.finish_reply, threading.Event()

    def slow_finish(owner, conversation_id, *args, **kwargs):
        if conversation_id == "c1":
            released.wait(10)
        return finish(owner, conversation_id, *args, **kwargs)

    monkeypatch.setattr(manager, "finish_reply", slow_finish)
    new_conversation(chat, "c1")
    new_conversation(chat, "c2")
    fake.push(Reply(parts=["quick"]))
    ending = threading.Thread(target=lambda: chat.post(f"{API}/c1/messages", json={"text": "hi"}), daemon=True)
    ending.start()
    slow = wait_until(lambda: next((j for j in jobs._jobs.values() if j.conversation_id == "c1"
                                    and j.flush_lock.locked()), None))
    try:
        fake.push(Reply(parts=["one "] + ["more "] * 9, chunk_delay_s=0.4))
        streaming = Streaming(chat, "c2", "go")

        def checkpointed_text():
            reply = manager.store.read("local", "c2")["messages"][-1]
            return reply["status"] == "streaming" and "".join(p.get("text", "") for p in reply.get("parts", ()))

        assert wait_until(checkpointed_text, timeout=2.0).startswith("one")  # long before its end, ~4 s in
        assert slow.flush_lock.locked()  # c1's end was still being stored all along
    finally:
        released.set()
    assert streaming.finish()[-1][0] == "done"
    ending.join(10)


def test_a_follower_reads_once_more_before_telling_the_writer_died(chat, chat_app, fake, monkeypatch):
    # Between two looks of a follower the writer stored its end and its process exited (a deploy
    # lets the last reply end, then the worker goes): the follower tells the end, not a death.
    from apsara.conversations.writers import new_writer
    from apsara.turns import follow

    new_conversation(chat)
    fake.push(Reply(parts=["all ", "of it"]))
    reply_id = chat.post(f"{API}/c1/messages", json={"text": "hi"}).json["reply"]["id"]
    jobs = chat_app.extensions["apsara"].chat.jobs
    wait_until(lambda: not jobs.running())
    manager = chat_app.extensions["apsara"].manager
    document = manager.store.read("local", "c1")
    reply = document["messages"][1]
    ending = [e for e in reply["_events"] if e[1] == "done"]
    writer = new_writer()
    boot, ticks = writer["pid_start"].rsplit(":", 1)
    reply.update(status="streaming", _events=[e for e in reply["_events"] if e[1] != "done"],
                 _writer={**writer, "pid_start": f"{boot}:{int(ticks) - 1}"})  # a process gone by now
    with manager.store.locked("local", "c1"):
        manager.store.write("local", "c1", document)
    landed = []

    def gone_once_its_end_landed(message):
        if not landed:
            landed.append(manager.finish_reply("local", "c1", reply_id, ending, {"status": "complete"}))
        return False

    monkeypatch.setattr(follow, "writer_alive", gone_once_its_end_landed)
    events = events_of(chat, "c1", reply_id)
    assert landed and events[-1][0] == "done" and events[-1][2]["status"] == "complete"
    assert events[-1][2]["text"] == "all of it"


def test_a_job_whose_reply_ended_before_its_launch_was_done_is_not_left_registered(chat_app):
    # With threads, a quick reply's thread can end (and leave the registry) before the request
    # that launched it registers it: registered then, it would be tended, and drained, for ever.
    from apsara.turns.jobs import Job

    jobs = chat_app.extensions["apsara"].chat.jobs
    job = Job("local", "c1", "m1", 1)
    jobs.remove(job)
    jobs.add(job)
    assert jobs.running() == 0
