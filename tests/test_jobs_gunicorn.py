"""Replies as jobs across processes: two Gunicorn servers share one data folder, as two
workers (or replicas on one disk) do, or one PostgreSQL database, as replicas on two
machines do (each then has a data folder of its own). A reply written by one is
followed, stopped and recovered through the other."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from apsara.testing.fake_gemini import Reply
from tests.postgres import current_store, server_env
from tests.servers import MASTERS, call, gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_kind")]
API = "/api/v1/conversations"


@contextlib.contextmanager
def two_servers(tmp_path, fake):
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url,
           "GUNICORN_ACCESS_LOG": "/dev/null", **server_env()}
    # On a database nothing is shared through the disk: each replica has its own folder.
    other = {**env, "APSARA_DATA_DIR": str(tmp_path / "other")} if server_env() else env
    with gunicorn(env, workers=1) as first, gunicorn(other, workers=1) as second:
        yield first, second


class Events:
    """An SSE response read event by event over a plain HTTP connection."""

    def __init__(self, base: str, method: str, path: str, body=None, headers=None):
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={**({"Content-Type": "application/json"} if data else {}),
                                                             **(headers or {})})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.seen: list[tuple[str, int, dict]] = []

    def next(self):
        fields = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if not line:
                if "event" in fields:
                    event = (fields["event"], int(fields["id"]), json.loads(fields["data"]))
                    self.seen.append(event)
                    return event
                fields = {}
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def until(self, predicate):
        while (event := self.next()) is not None:
            if predicate(event):
                return event
        return None

    def rest(self):
        while self.next() is not None:
            pass
        return self.seen

    def close(self):
        self.conn.close()


def text_of(events) -> str:
    return "".join(data["text"] for name, _, data in events if name == "delta")


def deltas(events) -> int:
    return sum(name == "delta" for name, _, _ in events)


def test_resume_from_another_process_after_the_client_left(tmp_path, fake):
    words = [f"w{n} " for n in range(30)]
    fake.default = Reply(parts=words, chunk_delay_s=0.05)
    with two_servers(tmp_path, fake) as (first, second):
        assert call("POST", f"{first}{API}", {"id": "c1"})[0] == 201
        stream = Events(first, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
        stream.until(lambda e: deltas(stream.seen) == 3)
        reply_id = stream.seen[1][2]["id"]
        last_id = stream.seen[-1][1]
        stream.close()  # the page was closed
        # the other process shows it streaming, with what was checkpointed
        shown = call("GET", f"{second}{API}/c1")[1]["messages"][1]
        assert shown["status"] in ("streaming", "complete")
        resumed = Events(second, "GET", f"{API}/c1/messages/{reply_id}/events",
                         headers={"Last-Event-ID": str(last_id)}).rest()
        assert [i for _, i, _ in resumed] == list(range(last_id + 1, last_id + 1 + len(resumed)))
        assert text_of(stream.seen) + text_of(resumed) == "".join(words)
        assert resumed[-1][0] == "done" and resumed[-1][2]["text"] == "".join(words)
        # and a replay of the whole finished reply, from either process, is the same
        for base in (first, second):
            again = Events(base, "GET", f"{API}/c1/messages/{reply_id}/events").rest()
            assert again[0][0] == "reply_start" and again[-1] == resumed[-1]
            assert text_of(again) == "".join(words)


def test_stop_from_another_process_closes_gemini_and_frees_the_conversation(tmp_path, fake):
    gate = threading.Event()
    fake.push(Reply(parts=["read this", " not this"], hold=gate))
    try:
        with two_servers(tmp_path, fake) as (first, second):
            call("POST", f"{first}{API}", {"id": "c1"})
            stream = Events(first, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
            stream.until(lambda e: e[0] == "delta")
            reply_id = stream.seen[1][2]["id"]
            started = time.monotonic()
            status, body = call("POST", f"{second}{API}/c1/messages/{reply_id}/stop")
            took = time.monotonic() - started
            assert status == 200 and took < 1.0, (status, took)
            assert body["reply"]["status"] == "stopped" and body["reply"]["text"] == "read this"
            assert fake.closed_streams and fake.closed_streams[0] - started < 1.0
            end = stream.rest()[-1]
            assert end[0] == "done" and end[2]["status"] == "stopped" and end[2]["text"] == "read this"
            fake.default = Reply(parts=["next"])
            status, sent = call("POST", f"{first}{API}/c1/messages", {"text": "go on"})  # at once, through the writer
            assert status == 201 and sent["reply"]["text"] == "next"
            status, sent = call("POST", f"{second}{API}/c1/messages", {"text": "and on"})
            assert status == 201 and sent["reply"]["text"] == "next"
            assert [m["status"] for m in call("GET", f"{first}{API}/c1")[1]["messages"][1::2]] == \
                ["stopped", "complete", "complete"]
    finally:
        gate.set()


def _worker_pid(base: str) -> int:
    """The worker process of a one-worker Gunicorn serving `base`."""
    bind = f"GUNICORN_BIND={base.removeprefix('http://')}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if bind in (entry / "environ").read_bytes().split(b"\0"):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = ppid
    [worker] = [pid for pid, ppid in found.items() if ppid in found]
    return worker


def test_sigkill_mid_stream_keeps_the_streamed_text(tmp_path, fake):
    words = [f"w{n} " for n in range(40)]
    fake.default = Reply(parts=words, chunk_delay_s=0.05)
    with two_servers(tmp_path, fake) as (first, second):
        call("POST", f"{first}{API}", {"id": "c1"})
        stream = Events(first, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
        stream.until(lambda e: deltas(stream.seen) == 20)
        early = text_of(stream.seen)
        reply_id = stream.seen[1][2]["id"]
        stream.until(lambda e: deltas(stream.seen) == 30)  # 0.5 s later: two checkpoint windows
        os.kill(_worker_pid(first), signal.SIGKILL)
        received = text_of(stream.seen)
        deadline = time.monotonic() + 15
        while (reply := call("GET", f"{second}{API}/c1")[1]["messages"][1])["status"] == "streaming":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert reply["status"] == "interrupted"
        assert reply["text"].startswith(early) and received.startswith(reply["text"])
        replayed = Events(second, "GET", f"{API}/c1/messages/{reply_id}/events").rest()
        assert text_of(replayed) == reply["text"]
        assert replayed[-1][0] == "error" and replayed[-1][2]["reply"]["status"] == "interrupted"
        # the conversation goes on
        fake.default = Reply(parts=["fine"])
        assert call("POST", f"{second}{API}/c1/messages", {"text": "still there?"})[0] == 201


@contextlib.contextmanager
def stopped_with_a_reply_running(tmp_path, fake, words: list[str], signum: int, within_s: float):
    """Stop the server streaming a reply whose client left with `signum`; it must be gone
    within `within_s`. Returns the other server, which shares its conversations."""
    fake.default = Reply(parts=words, chunk_delay_s=0.05)
    with two_servers(tmp_path, fake) as (first, second):
        call("POST", f"{first}{API}", {"id": "c1"})
        stream = Events(first, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
        stream.until(lambda e: deltas(stream.seen) == 3)
        stream.close()
        master, asked = MASTERS[first], time.monotonic()
        os.kill(master, signum)
        while os.waitpid(master, os.WNOHANG) == (0, 0):
            assert time.monotonic() - asked < within_s, "the stopping server outlived its time"
            time.sleep(0.05)
        yield second


def test_a_graceful_stop_lets_a_reply_whose_client_left_end(tmp_path, fake):
    # A deploy or a restart stops workers with SIGTERM: Gunicorn waits for open requests, and
    # a reply is a job that outlives its request.
    words = [f"w{n} " for n in range(40)]  # 2 s of reply
    with stopped_with_a_reply_running(tmp_path, fake, words, signal.SIGTERM, within_s=20) as other:
        reply = call("GET", f"{other}{API}/c1")[1]["messages"][1]
        assert (reply["status"], reply["text"]) == ("complete", "".join(words))


def test_a_quick_stop_does_not_wait_for_running_replies_and_keeps_what_they_streamed(tmp_path, fake):
    words = [f"w{n} " for n in range(400)]  # 20 s of reply
    with stopped_with_a_reply_running(tmp_path, fake, words, signal.SIGINT, within_s=5) as other:
        deadline = time.monotonic() + 20
        while (reply := call("GET", f"{other}{API}/c1")[1]["messages"][1])["status"] == "streaming":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert reply["status"] == "interrupted" and reply["text"].startswith("w0 w1 w2 ")


def test_twenty_racing_senders_one_winner_and_a_whole_tree(tmp_path, fake):
    fake.default = Reply(parts=["the answer"], delay_s=5.0)  # long enough that every sender arrives while it runs
    with two_servers(tmp_path, fake) as (first, second):
        call("POST", f"{first}{API}", {"id": "c1"})
        barrier = threading.Barrier(20)

        def send(n):
            barrier.wait(10)
            return call("POST", f"{(first, second)[n % 2]}{API}/c1/messages", {"text": f"sender {n}"})

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(send, range(20)))
        codes = sorted(code for code, _ in results)
        assert codes == [201] + [409] * 19, codes
        conversation = call("GET", f"{second}{API}/c1")[1]
        assert [m["role"] for m in conversation["messages"]] == ["user", "model"]
        assert conversation["messages"][1]["status"] == "complete"
    document = current_store(tmp_path).read("local", "c1")
    assert len(document["messages"]) == 2 and document["conversation"]["message_count"] == 2


def _an_import(count: int) -> dict:
    """An Apsara export of `count` conversations of 20 messages each (a list of exports)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conversations = []
    for n in range(count):
        messages, parent = [], None
        for k in range(20):
            message = {"id": f"m{k}", "role": "user" if k % 2 == 0 else "model", "parent_id": parent,
                       "created_at": stamp, "parts": [{"type": "text", "text": f"zebra {n} {k} " * 20}]}
            messages.append(message)
            parent = message["id"]
        conversations.append({"format": "apsara.conversation", "version": 1,
                              "conversation": {"id": f"imp{n}", "title": f"imported {n}", "created_at": stamp,
                                               "updated_at": stamp},
                              "messages": messages, "active": {m["parent_id"] or "": m["id"] for m in messages},
                              "files": []})
    return conversations


def _listed(base: str) -> list[str]:
    ids, cursor = [], None
    while True:
        status, page = call("GET", f"{base}{API}?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        ids += [c["id"] for c in page["conversations"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def _killed_mid_import(first: str, second: str, document) -> list[str]:
    """Import `document` through `first` and SIGKILL its worker once some of it is stored, as
    `second` sees it; returns the ids stored by then."""
    importing = ThreadPoolExecutor(1).submit(call, "POST", f"{first}{API}/import", document, None, 60)
    deadline = time.monotonic() + 30
    while not any(i.startswith("imp") for i in _listed(second)):
        assert time.monotonic() < deadline and not importing.done()
        time.sleep(0.005)
    os.kill(_worker_pid(first), signal.SIGKILL)
    with pytest.raises(Exception):
        importing.result(30)  # the client was told nothing
    seen = [i for i in _listed(second) if i.startswith("imp")]
    assert 0 < len(seen) < len(document), len(seen)
    return seen


def test_an_import_whose_worker_is_killed_part_way_is_taken_back_by_the_retry(tmp_path, fake):
    document = _an_import(300)
    with two_servers(tmp_path, fake) as (first, second):
        assert call("POST", f"{first}{API}", {"id": "mine"})[0] == 201
        _killed_mid_import(first, second, document)
        # The client's retry, at once through the other server: what the killed import stored is
        # taken back first, and every conversation is stored once, under its own id.
        status, body = call("POST", f"{second}{API}/import", document, None, 60)
        assert status == 201 and [c["id"] for c in body["conversations"]] == [f"imp{n}" for n in range(300)]
        assert sorted(_listed(second)) == sorted(["mine"] + [f"imp{n}" for n in range(300)])


def test_a_killed_import_is_taken_back_by_the_next_worker_to_look(tmp_path, fake):
    with two_servers(tmp_path, fake) as (first, second):
        assert call("POST", f"{first}{API}", {"id": "mine"})[0] == 201
        seen = _killed_mid_import(first, second, _an_import(300))
        # The worker that took its place looks at its first request.
        deadline = time.monotonic() + 30
        while True:
            try:
                listed = _listed(first)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert listed == ["mine"] and _listed(second) == ["mine"]
        assert call("GET", f"{second}{API}/{seen[0]}")[0] == 404
