"""The store under stress: many processes writing, writers killed mid-write."""
from __future__ import annotations

import os
import random
import select
import signal
import time
from datetime import datetime, timezone

import pytest

from apsara.clock import now_iso
from apsara.conversations.store import ConversationStore, iso_to_ns

OWNER, CID = "local", "stress"


def _seed(store: ConversationStore) -> None:
    with store.locked(OWNER, CID):
        store.write(OWNER, CID, {"conversation": {"id": CID, "updated_at": now_iso(),
                                                  "counter": 0}, "messages": [], "active": {}})


def _append(store: ConversationStore, tag: str, payload_size: int = 0) -> None:
    """One read-modify-write: bump the counter and add one message."""
    with store.locked(OWNER, CID):
        document = store.read(OWNER, CID)
        document["conversation"]["counter"] += 1
        document["messages"].append({"id": tag, "pad": "x" * payload_size})
        store.write(OWNER, CID, document)


def _consistent(document: dict) -> int:
    counter = document["conversation"]["counter"]
    assert len(document["messages"]) == counter
    return counter


def _run_children(count: int, body) -> None:
    pids = []
    for n in range(count):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                body(n)
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.slow
def test_concurrent_writer_processes_lose_no_update(tmp_path):
    store = ConversationStore(tmp_path)
    _seed(store)
    processes, each = 6, 40

    def writer(n):
        for i in range(each):
            _append(ConversationStore(tmp_path), f"p{n}-{i}")

    _run_children(processes, writer)
    document = store.read(OWNER, CID)
    assert _consistent(document) == processes * each
    assert {m["id"] for m in document["messages"]} == {f"p{n}-{i}" for n in range(processes) for i in range(each)}


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_old_or_new_file(tmp_path):
    store = ConversationStore(tmp_path)
    _seed(store)
    rng = random.Random(1234)
    path = store.path(OWNER, CID)
    # Kill within a few appends' time, whatever this disk's fsync costs: a fixed
    # window shorter than one append would never see a write land.
    started = time.monotonic()
    for i in range(3):
        _append(store, f"warm{i}")
    window_s = max(0.02, 4 * (time.monotonic() - started) / 3)
    first = last_seen = _consistent(store.read(OWNER, CID))
    kills = 300
    for _ in range(kills):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                child_store = ConversationStore(tmp_path)
                os.write(ready_w, b"!")
                for i in range(1_000_000):
                    _append(child_store, f"k{i}", payload_size=rng.randrange(0, 20_000))
            finally:
                os._exit(0)
        # A child forked from a big test process can take longer to start than an append
        # takes: the window opens when it is ready to write.
        os.close(ready_w)
        poller = select.poll()  # not select(): the test process may hold over 1,024 descriptors
        poller.register(ready_r, select.POLLIN)
        assert poller.poll(60_000), "the writer never started"
        os.close(ready_r)
        time.sleep(rng.uniform(0, window_s))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        document = store.read(OWNER, CID)  # parses, every time
        counter = _consistent(document)
        assert counter >= last_seen  # never goes back: old or new, nothing older
        last_seen = counter
    assert last_seen > first
    # the lock died with its holder: a fresh writer still gets through at once
    _append(store, "after")
    assert _consistent(store.read(OWNER, CID)) == last_seen + 1
    # temp files of killed writers are swept (here with no age limit)
    store.sweep_temp_files(older_than_s=0)
    assert sorted(p.name for p in path.parent.iterdir()) == [".recent.log", path.name]


def test_header_line_reads_without_parsing_messages(tmp_path):
    store = ConversationStore(tmp_path)
    _seed(store)
    for i in range(50):
        _append(store, f"m{i}", payload_size=100)
    header = store.read_header(OWNER, CID)
    assert header == store.read(OWNER, CID)["conversation"]
    first_line = store.path(OWNER, CID).read_bytes().split(b"\n", 1)[0]
    assert b'"messages"' not in first_line


def test_mtime_follows_updated_at(tmp_path):
    store = ConversationStore(tmp_path)
    _seed(store)
    updated_at = store.read_header(OWNER, CID)["updated_at"]
    assert store.path(OWNER, CID).stat().st_mtime_ns == iso_to_ns(updated_at)


def test_listing_follows_writes_from_another_process(tmp_path):
    """Each worker keeps its own recency map; it must see other workers' writes and deletes."""
    reader = ConversationStore(tmp_path)
    writer = ConversationStore(tmp_path)  # stands for another worker process
    base = time.time() - 60

    def stamp(n: int) -> str:
        return datetime.fromtimestamp(base + n, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for n in range(3):
        with writer.locked(OWNER, f"c{n}"):
            writer.write(OWNER, f"c{n}", {"conversation": {"id": f"c{n}", "updated_at": stamp(n)}})
    assert [h["id"] for h in reader.list_headers(OWNER, 10)[0]] == ["c2", "c1", "c0"]
    with writer.locked(OWNER, "c0"):
        writer.write(OWNER, "c0", {"conversation": {"id": "c0", "updated_at": stamp(9)}})
    writer.delete(OWNER, "c1")
    assert [h["id"] for h in reader.list_headers(OWNER, 10)[0]] == ["c0", "c2"]
    writer.recency(OWNER).compact()  # a compacted log is noticed and rescanned
    with writer.locked(OWNER, "c5"):
        writer.write(OWNER, "c5", {"conversation": {"id": "c5", "updated_at": stamp(5)}})
    assert [h["id"] for h in reader.list_headers(OWNER, 10)[0]] == ["c0", "c5", "c2"]
    # pages: the cursor position is (mtime, id) of the last item
    page, after = reader.list_headers(OWNER, 2)
    assert [h["id"] for h in page] == ["c0", "c5"]
    assert [h["id"] for h in reader.list_headers(OWNER, 2, after)[0]] == ["c2"]


def test_a_recency_log_replaced_under_its_old_inode_number_is_read_afresh(tmp_path):
    """A log compacted twice by other processes may get its freed inode number back: a reader
    must not read on from where it stopped in the old log."""
    reader, writer = ConversationStore(tmp_path), ConversationStore(tmp_path)
    base = time.time() - 60

    def write(n: int) -> None:
        stamp = datetime.fromtimestamp(base + n, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with writer.locked(OWNER, f"c{n}"):
            writer.write(OWNER, f"c{n}", {"conversation": {"id": f"c{n}", "updated_at": stamp}})
    for n in range(3):
        write(n)
    writer.recency(OWNER).compact()
    assert [h["id"] for h in reader.list_headers(OWNER, 10)[0]] == ["c2", "c1", "c0"]
    log = writer.recency(OWNER).log_path
    inode = log.stat().st_ino
    write(3)
    write(4)
    # What two more compactions elsewhere would leave, written into the same inode: the
    # newest conversations first, so that reading on from the old end would miss them.
    times = {f"c{n}": writer.path(OWNER, f"c{n}").stat().st_mtime_ns for n in (3, 4, 0, 1, 2)}
    with open(log, "r+b") as fh:
        fh.write(("# another\n" + "".join(f"{t} {i}\n" for i, t in times.items())).encode())
        fh.truncate()
    assert log.stat().st_ino == inode
    assert [h["id"] for h in reader.list_headers(OWNER, 10)[0]] == ["c4", "c3", "c2", "c1", "c0"]


def test_lock_waits_cooperatively_and_times_out(tmp_path):
    import threading

    from apsara.conversations.locks import LockTimeout

    store = ConversationStore(tmp_path)
    order = []
    with store.locked(OWNER, CID):
        def second():
            with store.locked(OWNER, CID):
                order.append("second")
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.1)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]
    with store.locked(OWNER, CID):
        with pytest.raises(LockTimeout):
            with store.locked(OWNER, CID, timeout_s=0.2):
                pass


def test_a_forked_writer_makes_its_own_fsync_threads(tmp_path):
    store = ConversationStore(tmp_path)
    _seed(store)
    store.append(OWNER, CID, [{"type": "title", "at": now_iso()}])  # this process's fsync threads exist now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)  # a child waiting on its parent's threads would hang here
            ConversationStore(tmp_path).append(OWNER, CID, [{"type": "title", "at": now_iso()}])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_turns_disk_work_starts_once_its_call_waits_on_gemini(tmp_path):
    # Under gevent (the workers' class) a reply started by the turn runs until it first waits.
    # The user message's fsync and index write start then, as Gemini answers: started before,
    # they contended with the request's CPU-bound build for the interpreter's lock.
    import subprocess
    import sys
    from pathlib import Path

    _seed(ConversationStore(tmp_path))
    script = f"""
from gevent import monkey; monkey.patch_all()
import os, threading, time
from apsara.clock import now_iso
from apsara.conversations.store import ConversationStore
store, order = ConversationStore({str(tmp_path)!r}), []
fsync, index = os.fsync, store.search_index.update
os.fsync = lambda fd: (order.append("fsync"), fsync(fd))[1]
store.search_index.update = lambda *args: (order.append("index"), index(*args))[1]
def call():
    order.append("build")
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:  # the SDK building a long request
        pass
    order.append("on the wire")
    time.sleep(0.1)  # Gemini at work
    order.append("answered")
thread, at = threading.Thread(target=call), now_iso()
with store.locked({OWNER!r}, {CID!r}):
    store.append({OWNER!r}, {CID!r}, [{{"type": "message", "at": at, "message": {{
        "id": "m1", "role": "user", "parent_id": None, "created_at": at, "parts": []}}}}], on_written=thread.start)
print(" / ".join(order[:2] + sorted(order[2:4])))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "build / on the wire / fsync / index"


def test_a_files_time_says_indexed_only_once_its_records_are_on_disk(tmp_path, monkeypatch):
    # The index is written beside the fsync, and the start-up check skips a file whose time is
    # the one indexed: a time set before the fsync could reach the disk without the records.
    store = ConversationStore(tmp_path)
    _seed(store)
    at_fsync, fsync = [], os.fsync

    def watched_fsync(fd):
        at_fsync.append(os.fstat(fd).st_mtime_ns)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    changed = now_iso()
    with store.locked(OWNER, CID):
        store.append(OWNER, CID, [{"type": "message", "at": changed, "message": {
            "id": "m1", "role": "user", "parent_id": None, "created_at": changed, "parts": []}}])
    assert at_fsync and iso_to_ns(changed) not in at_fsync
    assert store.path(OWNER, CID).stat().st_mtime_ns == iso_to_ns(changed)


def test_a_failed_fsync_is_raised_once_the_index_write_beside_it_ended():
    # Under the conversation's lock: an index write still running after it is released could
    # land after the next change's and leave the older row.
    from apsara.durable import on_disk_threads

    ended = []

    def fsync():
        raise OSError(5, "Input/output error")

    def index_write():
        time.sleep(0.2)
        ended.append("index")

    with pytest.raises(OSError):
        on_disk_threads([fsync, index_write])
    assert ended == ["index"]


def test_a_mark_torn_after_a_new_header_is_rebuilt_pointing_at_it(tmp_path):
    # The power went while an append's mark was being written, its header record whole before
    # it: the next writer rebuilds the mark, and listing (which reads the header the mark
    # points at) must show that header, as reading the conversation whole does.
    from apsara.conversations.journal import record

    store = ConversationStore(tmp_path)
    stamp = now_iso()
    header = {"id": "c1", "created_at": stamp, "updated_at": stamp, "message_count": 0, "title": "first"}
    with store.locked("u", "c1"):
        store.write("u", "c1", {"conversation": header, "messages": [], "active": {}, "seq": 0})
    for title, archived in (("second", False), ("third", True)):
        with store.locked("u", "c1"):
            store.append("u", "c1", [record(0, "conversation", now_iso(),
                                            conversation={**header, "title": title, "archived": archived})])
    path = store.path("u", "c1")
    path.write_bytes(path.read_bytes()[:-10])
    with store.locked("u", "c1"):
        store.append("u", "c1", [record(0, "stop", now_iso(), id="r1")], sync=False)
    fresh = ConversationStore(tmp_path)
    listed = fresh.read_header("u", "c1")
    assert (listed["title"], listed["archived"]) == ("third", True)
    assert fresh.read("u", "c1")["conversation"]["title"] == "third"


def test_a_writer_killed_before_its_listing_line_is_listed_by_running_workers_after_the_next_start(tmp_path):
    # The master starts a new worker for the killed one; its start mends the listing log, and
    # the workers that kept running then list the conversation too.
    from apsara.conversations import recency

    def new(store, cid):
        stamp = now_iso()
        with store.locked("u", cid):
            store.write("u", cid, {"conversation": {"id": cid, "created_at": stamp, "updated_at": stamp,
                                                    "message_count": 0, "title": cid},
                                   "messages": [], "active": {}, "seq": 0})

    def listed(store):
        return sorted(h["id"] for h in store.list_headers("u", 50)[0])

    running = ConversationStore(tmp_path)
    new(running, "before")
    assert listed(running) == ["before"]
    pid = os.fork()
    if pid == 0:  # a worker killed between the conversation's file and its line in the log
        try:
            recency.RecencyIndex.record = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
            new(ConversationStore(tmp_path), "lost")
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    new(running, "after")
    assert listed(running) == ["after", "before"]  # the log does not name it
    ConversationStore(tmp_path).check_search_index()  # what a worker's start runs
    assert listed(running) == ["after", "before", "lost"]


@pytest.mark.parametrize("replacement", ["shorter", "longer"])
def test_a_follower_of_a_file_whose_inode_number_came_back_reads_it_again_whole(tmp_path, replacement):
    # A deleted conversation made again under its id, or a file compacted twice, may get the
    # freed inode number back: a position in the old file means nothing in the new one.
    from apsara.conversations.file_format import encode
    from apsara.conversations.journal import record

    store = ConversationStore(tmp_path)
    stamp = now_iso()
    header = {"id": "c1", "created_at": stamp, "updated_at": stamp, "message_count": 0, "title": "old"}
    with store.locked("u", "c1"):
        store.write("u", "c1", {"conversation": header, "messages": [], "active": {}, "seq": 0})
        for n in range(3):
            store.append("u", "c1", [record(0, "conversation", now_iso(), conversation={**header, "title": f"t{n}"})])
    _, position = store.load("u", "c1")
    padding = "x" * (0 if replacement == "shorter" else 4 * position[1])
    other = encode({"conversation": {**header, "title": "new" + padding}, "messages": [], "active": {}, "seq": 0})
    with open(store.path("u", "c1"), "r+b") as fh:  # the same inode, other bytes
        fh.write(other)
        fh.truncate()
    assert store.may_have_news("u", "c1", position)
    assert store.follow("u", "c1", position) == (None, None)
