"""Stream slots and budget reservations of a process that died stop holding.

A replica killed mid-stream (its pod replaced by one with another hostname) and a
restarted container (same hostname, its workers handed the same low pids) must not
keep a user's slots and budget held until the hours-long outer bounds run out.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from apsara import create_app, holders
from apsara.holders import HOST, this_process
from apsara.ratelimits import parse_rate_limits
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings
from tests.postgres import STORE, server_env
from tests.servers import call, gunicorn
from tests.test_jobs_gunicorn import Events
from tests.test_usage import API, send, start, wait_until_written

# Every test here runs on both stores: the files (SQLite) and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_kind")

OTHER_POD = "apsara-7d9f-other"  # a replica on another machine


def streams_app(tmp_path, fake):
    return create_app(make_settings(tmp_path, rate_limits=parse_rate_limits("streams=1"),
                                    gemini_api_key="k", gemini_base_url=fake.url))


def budget_app(tmp_path, fake):
    return create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                    budgets={"default": {"tokens_per_day": 1000}, "users": {}}))


def _sql(db, statement: str, args=()):
    """A statement on a store's own database (the SQLite file or PostgreSQL)."""
    if hasattr(db, "write"):
        with db.write() as sql:
            return sql.execute(statement, args).fetchall()
    with db.connection() as conn:
        cursor = conn.execute(statement.replace("?", "%s"), args)
        return cursor.fetchall() if cursor.description else None


def streams_table(app):
    """(database, table) of the app's stream slots: `streams` in the SQLite file, or PostgreSQL's."""
    limits = app.extensions["apsara"].rate_limits
    if hasattr(limits, "pg"):
        return limits.pg, "stream_slots"
    return limits.db, "streams"


def hold_stream(app, host: str, pid: int, process: str | None, seen: float | None):
    """A stream slot of user `local`, as the process (host, pid, process) took it a minute ago."""
    db, table = streams_table(app)
    owner = "user" if table == "streams" else "owner"
    _sql(db, f"INSERT INTO {table} (id, {owner}, pid, host, started, process, seen) VALUES (?,?,?,?,?,?,?)",
         ("s-held", "local", pid, host, time.time() - 60, process, seen))
    return db, table


def hold_budget(app, host: str, pid: int, process: str | None, seen: float | None):
    """A reservation of the whole day's budget of user `local`, taken a minute ago."""
    ledger = app.extensions["apsara"].usage.ledger
    owner = "user" if hasattr(ledger.db, "write") else "owner"
    _sql(ledger.db, f"INSERT INTO reservations (id, {owner}, tokens, cost_usd, pid, host, started, process, seen) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
         ("r-held", "local", 5000, 0.0, pid, host, time.time() - 60, process, seen))
    return ledger.db


def another_process() -> str:
    """The process_start() of a process that had this pid before (a restarted container)."""
    return "another-boot:12345"


def test_a_killed_replicas_stream_slot_is_freed_once_it_falls_silent(tmp_path, fake):
    app = streams_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_stream(app, OTHER_POD, 7, "boot:1", seen=time.time() - 45)
    assert send(client, "go", stream=True).status_code == 200


def test_a_live_replicas_stream_slot_still_counts(tmp_path, fake):
    app = streams_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_stream(app, OTHER_POD, 7, "boot:1", seen=time.time() - 5)
    refused = send(client, "go", stream=True)
    assert refused.status_code == 429 and "streams=1" in refused.json["error"]["message"]


def test_a_slot_of_an_older_version_without_heartbeat_holds_until_stale(tmp_path, fake):
    app = streams_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_stream(app, OTHER_POD, 7, None, seen=None)
    assert send(client, "go", stream=True).status_code == 429


def test_a_restarted_containers_stream_slot_is_freed(tmp_path, fake):
    # The same hostname and the same pid as this process, but a process started before it.
    app = streams_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_stream(app, HOST, os.getpid(), another_process(), seen=time.time())
    assert send(client, "go", stream=True).status_code == 200


def test_a_killed_replicas_reservation_is_freed_once_it_falls_silent(tmp_path, fake):
    app = budget_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    db = hold_budget(app, OTHER_POD, 7, "boot:1", seen=time.time() - 45)
    assert send(client, "hello").status_code == 201
    assert _sql(db, "SELECT count(*) FROM reservations")[0][0] == 0


def test_a_live_replicas_reservation_still_counts(tmp_path, fake):
    app = budget_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_budget(app, OTHER_POD, 7, "boot:1", seen=time.time() - 5)
    refused = send(client, "hello")
    assert refused.status_code == 429 and "tokens_per_day" in refused.json["error"]["message"]


def test_a_restarted_containers_reservation_is_freed(tmp_path, fake):
    app = budget_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    hold_budget(app, HOST, os.getpid(), another_process(), seen=time.time())
    assert send(client, "hello").status_code == 201


def test_an_open_stream_keeps_its_slot_seen_and_the_heartbeat_ends_with_it(tmp_path, fake, monkeypatch):
    beat = holders.Heartbeat(every_s=0.05)  # its own: slots other tests left open keep the shared one going
    for store in ("apsara.ratelimits", "apsara.database.ratelimits"):
        monkeypatch.setattr(f"{store}.heartbeat", beat)
    app = streams_app(tmp_path, fake)
    client = app.test_client()
    start(client)
    db, table = streams_table(app)
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    open_stream = client.post(f"{API}/c1/messages", json={"text": "go", "stream": True}, buffered=False)
    next(iter(open_stream.response))
    pid, process = this_process()
    (slot_pid, slot_process, seen), = _sql(db, f"SELECT pid, process, seen FROM {table}")
    assert (slot_pid, slot_process) == (pid, process) and abs(seen - time.time()) < 5
    # As if the stream had been open for minutes: the heartbeat says it still is.
    _sql(db, f"UPDATE {table} SET seen = ?", (time.time() - 600,))
    assert beat.running
    deadline = time.monotonic() + 10
    while _sql(db, f"SELECT seen FROM {table}")[0][0] < time.time() - 5:
        assert time.monotonic() < deadline, "the open stream's slot was never refreshed"
        time.sleep(0.02)
    gate.set()
    open_stream.get_data()
    open_stream.close()
    wait_until_written(client)
    assert _sql(db, f"SELECT count(*) FROM {table}")[0][0] == 0
    while beat.running:
        assert time.monotonic() < deadline, "the heartbeat outlived the rows it refreshes"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_gevent_workers_open_stream_keeps_its_slot_seen(tmp_path, fake):
    # The heartbeat as it runs in production: a greenlet of a Gunicorn gevent worker.
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url,
           "APSARA_RATE_LIMITS": "streams=1", **server_env()}

    def slots(statement: str):
        if STORE["database_url"]:
            import psycopg

            with psycopg.connect(STORE["database_url"], autocommit=True) as conn:
                cursor = conn.execute(statement.replace("streams", "stream_slots"))
                return cursor.fetchall() if cursor.description else None
        with sqlite3.connect(tmp_path / "data" / "limits.sqlite3") as sql:
            return sql.execute(statement).fetchall()

    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    with gunicorn(env, workers=1) as base:
        call("POST", f"{base}{API}", {"id": "c1"})
        stream = Events(base, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
        stream.until(lambda event: event[0] == "delta")
        slots("UPDATE streams SET seen = seen - 600")  # as if the stream had been open for minutes
        deadline = time.monotonic() + 3 * holders.HEARTBEAT_S
        while slots("SELECT seen FROM streams")[0][0] < time.time() - 60:
            assert time.monotonic() < deadline, "the worker never refreshed its open stream's slot"
            time.sleep(0.2)
        gate.set()
        stream.until(lambda event: event[0] == "done")


@pytest.mark.file_format
def test_files_of_an_older_version_gain_the_new_columns(tmp_path, fake):
    data = make_settings(tmp_path).data_dir
    data.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(data / "limits.sqlite3") as old:  # the streams table as the first release made it
        old.execute("CREATE TABLE streams (id TEXT PRIMARY KEY, user TEXT NOT NULL, pid INTEGER NOT NULL, "
                    "host TEXT NOT NULL, started REAL NOT NULL)")
        old.execute("INSERT INTO streams VALUES ('s-old', 'local', 7, ?, ?)", (OTHER_POD, time.time() - 60))
    with sqlite3.connect(data / "usage.sqlite3") as old:
        old.execute("CREATE TABLE reservations (id TEXT PRIMARY KEY, user TEXT NOT NULL, tokens INTEGER NOT NULL, "
                    "cost_usd REAL NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, started REAL NOT NULL)")
    app = create_app(make_settings(tmp_path, rate_limits=parse_rate_limits("streams=2"), gemini_api_key="k",
                                   gemini_base_url=fake.url, budgets={"default": {"tokens_per_day": 100_000},
                                                                      "users": {}}))
    client = app.test_client()
    start(client)
    assert send(client, "go", stream=True).status_code == 200  # the old slot holds one of two
    for name in ("limits.sqlite3", "usage.sqlite3"):
        with sqlite3.connect(data / name) as upgraded:
            table = "streams" if name == "limits.sqlite3" else "reservations"
            columns = [row[1] for row in upgraded.execute(f"PRAGMA table_info({table})")]
        assert columns[-2:] == ["process", "seen"]


def test_a_forked_process_beats_for_its_own_rows_only():
    # A Gunicorn worker is forked from a master that may have held rows (its threads are not
    # copied): the child starts its own heartbeat, refreshing the rows of its own pid.
    beat, refreshed = holders.Heartbeat(every_s=0.02), []
    parent_rows = threading.Event()

    def refresh(pid, process):
        refreshed.append(pid)
        return 0 if parent_rows.is_set() and pid == os.getpid() else 1

    beat.holding(refresh)
    child = os.fork()
    if child == 0:  # the child: no heartbeat until it takes a row of its own
        ok = not beat.running
        refreshed.clear()
        beat.holding(refresh)
        deadline = time.monotonic() + 5
        while os.getpid() not in refreshed and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if ok and refreshed and set(refreshed) == {os.getpid()} else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent_rows.set()  # the parent lets go of its rows: its heartbeat ends
    deadline = time.monotonic() + 5
    while beat.running:
        assert time.monotonic() < deadline, "the heartbeat outlived the rows it refreshes"
        time.sleep(0.01)


def test_a_killed_process_not_yet_reaped_holds_nothing():
    # Between its death and its parent's wait() (a Gunicorn master busy for a moment), a killed
    # worker is a zombie: /proc still lists it, with its start, but it runs no more.
    import signal
    import subprocess

    holder_alive, process_start = holders.holder_alive, holders.process_start
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start(child.pid)
        assert holder_alive(child.pid, HOST, started)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while process_start(child.pid) is not None and holder_alive(child.pid, HOST, started):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert process_start(child.pid) == started  # still listed, not reaped
        assert not holder_alive(child.pid, HOST, started)
    finally:
        child.kill()
        child.wait()
