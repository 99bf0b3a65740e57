"""SQLite's log is copied back into the database by a thread of its own, not inside a write.

What a checkpoint has copied is in the database file itself: a copy of that file
alone (without its `-wal`) shows what has been checkpointed, and nothing else.
"""
import multiprocessing
import os
import shutil
import sqlite3
import time

from apsara import checkpoints
from apsara.search import SearchIndex
from apsara.usage.database import SqliteDatabase


def _rows_in_file_alone(path, tmp_path, table: str) -> int:
    copy = tmp_path / f"copy-{time.monotonic_ns()}.sqlite"
    shutil.copyfile(path, copy)
    connection = sqlite3.connect(copy)
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:  # the file alone does not hold the table yet
        return 0
    finally:
        connection.close()


def _wait_for_rows(path, tmp_path, table: str, wanted: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while (found := _rows_in_file_alone(path, tmp_path, table)) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _index_some(index: SearchIndex, first: int, count: int) -> None:
    for n in range(first, first + count):
        header = {"id": f"c{n}", "title": f"title {n}", "updated_at": "x"}
        index.put("local", header, n, [f"message {n} " * 10], n)


def test_index_writes_reach_the_database_file_without_a_write_checkpointing(tmp_path):
    index = SearchIndex(tmp_path / "search" / "index.sqlite")
    _index_some(index, 0, 40)
    with index._reading() as db:  # the writers' own checkpoint waits for a log of many pages
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == checkpoints.SAFETY_PAGES
    # 40 small writes are far below it: only the checkpoint thread can have copied them over.
    assert _wait_for_rows(index.path, tmp_path, "conversations", 40) == 40


def _open_files_on(path) -> int:
    """This process's descriptors open on the database, its log or its shared memory."""
    folder = "/proc/self/fd"
    count = 0
    for fd in os.listdir(folder):
        try:
            count += os.readlink(f"{folder}/{fd}").startswith(str(path))
        except OSError:  # closed meanwhile
            pass
    return count


def test_the_thread_ends_when_idle_and_the_next_write_starts_another(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "IDLE_ROUNDS", 100)  # it waits 5 s before it ends
    monkeypatch.setattr(checkpoints, "EVERY_S", 0.05)
    path = tmp_path / "usage.sqlite3"
    database = SqliteDatabase(path, "CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    checkpointer = checkpoints.for_file(path)
    with database.read():
        held_by_the_writer = _open_files_on(path)
    with database.write() as sql:
        sql.execute("INSERT INTO t VALUES (1)")
    assert _wait_for_rows(path, tmp_path, "t", 1) == 1
    # Between checkpoints the thread holds nothing open: hundreds of databases must not run a
    # process out of file descriptors. (SQLite keeps the descriptor of a closed connection's
    # database file, for reuse, while another connection of the process holds a lock on it:
    # one, however many checkpoints.) The rows show as the checkpoint ends: give it a moment to close.
    deadline = time.monotonic() + 0.5
    while (held := _open_files_on(path)) > held_by_the_writer + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held <= held_by_the_writer + 1
    assert checkpointer._running_in is not None, "counted after the thread ended, not between checkpoints"
    deadline = time.monotonic() + 15
    while checkpointer._running_in is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checkpointer._running_in is None, "the idle thread did not end"
    with database.write() as sql:
        sql.execute("INSERT INTO t VALUES (2)")
    assert _wait_for_rows(path, tmp_path, "t", 2) == 2


def test_workers_opening_a_new_database_at_once_all_write(tmp_path):
    """Two workers starting on a fresh data folder open the shared database together:
    switching the new file to WAL is refused at once to all but one, and is asked again."""
    context = multiprocessing.get_context("fork")
    failures = []
    for trial in range(30):
        path = tmp_path / f"shared-{trial}.sqlite"
        barrier, answers = context.Barrier(6), context.Queue()

        def open_and_write():
            database = SqliteDatabase(path, "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER);")
            barrier.wait()
            try:
                with database.write() as sql:
                    sql.execute("INSERT OR REPLACE INTO t VALUES ('k', 1)")
                answers.put(None)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion
                answers.put(repr(exc))

        workers = [context.Process(target=open_and_write) for _ in range(6)]
        for worker in workers:
            worker.start()
        failures += [answer for answer in (answers.get(timeout=30) for _ in workers) if answer]
        for worker in workers:
            worker.join()
    assert failures == []
