"""The PostgreSQL store's own promises: migrations applied once however many replicas
start together, no greenlet blocked on a query, a silent writer on another machine
shown interrupted, and the newest-first listing served by its index."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from apsara import create_app
from apsara.clock import now_iso
from apsara.conversations.journal import record
from apsara.database.migrations import MIGRATIONS, migrate
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings, parse_sse, stream_until
from tests.postgres import STORE, empty

API = "/api/v1/conversations"


@pytest.fixture
def fresh_database(postgres_url):
    """An empty database of its own (no schema yet), dropped afterwards."""
    name = "fresh_" + str(threading.get_ident())
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    yield url
    from apsara.database import close_pools

    close_pools()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_replicas_starting_together_apply_each_migration_once(fresh_database):
    barrier, applied, errors = threading.Barrier(8), [], []

    def start():
        try:
            with psycopg.connect(fresh_database, autocommit=True) as conn:
                barrier.wait(10)
                applied.extend(migrate(conn))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(applied) == [version for version, _, _ in MIGRATIONS]
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [version for version, _, _ in MIGRATIONS]


GEVENT_PROBE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sys, time, gevent
    from apsara.database import Database

    db = Database(sys.argv[1])
    ticks = []

    def slow():
        with db.connection() as conn:
            conn.execute("SELECT pg_sleep(1)")

    def ticker():
        end = time.monotonic() + 0.9
        while time.monotonic() < end:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    started = time.monotonic()
    gevent.joinall([gevent.spawn(slow), gevent.spawn(ticker), gevent.spawn(slow)])
    print(len(ticks), round(time.monotonic() - started, 2))
""")


def test_a_slow_query_blocks_only_its_own_greenlet(postgres_url):
    """Under gevent's monkey patching (the default worker) a query waits cooperatively."""
    done = subprocess.run([sys.executable, "-c", GEVENT_PROBE, postgres_url], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    ticks, took = done.stdout.split()
    assert int(ticks) >= 40  # the ticker ran all along: ~90 ticks unless a query froze the hub
    assert float(took) < 1.8  # and the two one-second queries ran at the same time


@pytest.fixture
def on_database(postgres_url, tmp_path, fake):
    empty(postgres_url)
    STORE["database_url"] = postgres_url
    yield create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    STORE["database_url"] = None


def test_a_writer_elsewhere_that_stopped_renewing_is_interrupted(on_database):
    client = on_database.test_client()
    client.post(API, json={"id": "c1"})
    client.post(f"{API}/c1/messages", json={"text": "hello"})
    store = on_database.extensions["apsara"].store
    document = store.read("local", "c1")
    reply = document["messages"][1]
    silent_since = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    reply.update(status="streaming", _writer={"pid": 1, "host": "another-machine", "seen": silent_since})
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert client.get(f"{API}/c1").json["messages"][1]["status"] == "streaming"  # its lease still runs
    reply["_writer"]["seen"] = (datetime.now(timezone.utc) - timedelta(seconds=16)).isoformat().replace("+00:00", "Z")
    with store.locked("local", "c1"):
        store.write("local", "c1", document)
    assert client.get(f"{API}/c1").json["messages"][1]["status"] == "interrupted"
    assert client.post(f"{API}/c1/messages", json={"text": "next"}).status_code == 201


def test_the_listing_reads_the_index_not_the_table(on_database, postgres_url):
    client = on_database.test_client()
    for n in range(30):
        client.post(API, json={"id": f"c{n:02d}"})
    with psycopg.connect(postgres_url) as conn:
        conn.execute("ANALYZE conversations")
        # With 30 rows the planner may find a sort as cheap as the index; forbidding
        # scans of the table and sorts leaves it a Sort only if no index gives the order.
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM conversations WHERE owner = 'local' ORDER BY updated_ns DESC, id LIMIT 21"))
    assert "conversations_newest" in plan and "Sort" not in plan
    page = client.get(f"{API}?limit=20").json
    rest = client.get(f"{API}?limit=20&cursor={page['next_cursor']}").json
    seen = page["conversations"] + rest["conversations"]
    assert len({c["id"] for c in seen}) == 30 and rest["next_cursor"] is None
    stamps = [c["updated_at"] for c in seen]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.slow
def test_gthread_workers_serve_from_the_database_too(postgres_url, tmp_path, fake):
    from concurrent.futures import ThreadPoolExecutor

    from apsara.testing.fake_gemini import Reply
    from tests.servers import call, gunicorn

    empty(postgres_url)
    fake.default = Reply(parts=["from ", "threads"], chunk_delay_s=0.05)
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "APSARA_DATABASE_URL": postgres_url, "gemini": "k",
           "GEMINI_BASE_URL": fake.url, "GUNICORN_THREADS": "16", "GUNICORN_ACCESS_LOG": "/dev/null"}
    with gunicorn(env, workers=2, worker_class="gthread") as base:
        url = f"{base}{API}"

        def converse(n):
            assert call("POST", url, {"id": f"t{n}"})[0] == 201
            return call("POST", f"{url}/t{n}/messages", {"text": "hi"})

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(converse, range(12)))
        assert [code for code, _ in results] == [201] * 12
        assert all(body["reply"]["text"] == "from threads" for _, body in results)
        assert len(call("GET", f"{url}?limit=50")[1]["conversations"]) == 12


def test_a_file_of_several_chunks_comes_back_whole(on_database, postgres_url):
    """Bytes are kept as 1 MB rows and streamed back: the copy is exact across chunk edges."""
    import hashlib
    import io
    import os

    from apsara.database.files import CHUNK

    client = on_database.test_client()
    data = b"%PDF-1.4\n" + os.urandom(2 * CHUNK + 12345)
    response = client.post("/api/v1/files", data={"file": (io.BytesIO(data), "big.pdf")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    meta = response.json
    assert meta["size_bytes"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT n, length(data) FROM file_chunks WHERE file_id = %s ORDER BY n",
                            (meta["id"],)).fetchall()
    assert rows == [(0, CHUNK), (1, CHUNK), (2, len(data) - 2 * CHUNK)]
    download = client.get(f"/api/v1/files/{meta['id']}/content")
    assert download.status_code == 200 and download.headers["Content-Length"] == str(len(data))
    assert download.data == data


def test_a_stop_written_by_another_replica_is_told_at_once(postgres_url, tmp_path, fake, monkeypatch):
    """Two apps on one database stand for two replicas; the one running the reply never asks
    for the stop (its asking is turned off): only the notification can stop it, and does."""
    from apsara.database import stops

    empty(postgres_url)
    STORE["database_url"] = postgres_url
    try:
        running = create_app(make_settings(tmp_path / "a", gemini_api_key="k", gemini_base_url=fake.url))
        other = create_app(make_settings(tmp_path / "b", gemini_api_key="k", gemini_base_url=fake.url))
    finally:
        STORE["database_url"] = None
    monkeypatch.setattr(stops, "ASK_LISTENING_S", 3600.0)
    client = running.test_client()
    client.post(API, json={"id": "c1"})
    gate = threading.Event()
    fake.push(Reply(parts=["read this", " not this"], hold=gate))
    try:
        first, chunks = stream_until(client, f"{API}/c1/messages", {"text": "go"}, b"read this")
        store = running.extensions["apsara"].store
        deadline = time.monotonic() + 5
        while not store.stops.listening and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.stops.listening
        reply_id = next(data["id"] for name, _, data in parse_sse(first.decode())[0] if name == "reply_start")
        started = time.monotonic()
        stopped = other.test_client().post(f"{API}/c1/messages/{reply_id}/stop")
        assert stopped.status_code == 200 and stopped.json["reply"]["status"] == "stopped"
        assert fake.closed_streams and fake.closed_streams[0] - started < 1.0
        end = parse_sse((first + b"".join(chunks)).decode())[0][-1]
        assert end[0] == "done" and end[2]["status"] == "stopped"
        # a deletion is told the same way
        fake.push(Reply(parts=["more", " and more"], hold=gate))
        seen, chunks = stream_until(client, f"{API}/c1/messages", {"text": "again"}, b"more")
        assert other.test_client().delete(f"{API}/c1").status_code == 204
        assert parse_sse((seen + b"".join(chunks)).decode())[0][-1][0] == "done"
        assert len(fake.closed_streams) == 2
    finally:
        gate.set()


def test_a_listener_let_go_leaves_the_next_ones_hearing_alone(postgres_url):
    """The watcher idles out as its last reply ends, and the next reply starts another listener
    while the first still winds down: the first's end must not unset what the second heard."""
    from apsara.database import stops

    listener = stops.StopListener(postgres_url)
    first_until = time.monotonic() + 1.0
    first = threading.Thread(target=listener.run, args=(lambda *told: None, lambda: time.monotonic() < first_until))
    first.start()
    time.sleep(0.8)
    second_until = time.monotonic() + 4.0
    second = threading.Thread(target=listener.run,
                              args=(lambda *told: None, lambda: time.monotonic() < second_until))
    second.start()
    first.join(10)
    time.sleep(0.2)
    assert listener.listening  # else its replies would ask the database 20 times as often
    second.join(10)
    assert not listener.listening


def test_a_listener_whose_probe_never_comes_back_leaves_replies_asking_often(postgres_url, monkeypatch):
    """As behind a pooler that does not pass LISTEN on: the listener does not count as listening."""
    from apsara.database import stops

    listener = stops.StopListener(postgres_url)
    monkeypatch.setattr(stops.StopListener, "_probe", staticmethod(lambda conn, probe: None))
    until = time.monotonic() + 1.5
    thread = threading.Thread(target=listener.run, args=(lambda *told: None, lambda: time.monotonic() < until))
    thread.start()
    time.sleep(1.0)  # listening on its connection by now, but never told so
    assert thread.is_alive() and not listener.listening
    thread.join(10)
    monkeypatch.undo()
    heard = []
    until = time.monotonic() + 1.5
    thread = threading.Thread(target=listener.run, args=(lambda *told: heard.append(told),
                                                         lambda: time.monotonic() < until))
    thread.start()
    deadline = time.monotonic() + 1.2
    while not listener.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.listening  # its own probe came back
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        stops.notify(conn, "local", "c1", "m1")
    thread.join(10)
    assert heard == [("local", "c1", "m1")]


def test_behind_a_pooler_the_listener_tries_new_connections_ever_more_slowly_and_says_so_once(
        postgres_url, monkeypatch, caplog):
    """A connection that never hears its probes may be one whose server hung as it began to
    listen: it is made again, but behind a pooler every one hears nothing, so each next one
    comes later, and the warning is given once."""
    from apsara.database import stops

    monkeypatch.setattr(stops.StopListener, "_probe", staticmethod(lambda conn, probe: None))
    monkeypatch.setattr(stops, "PROBE_WAIT_S", 0.2)
    monkeypatch.setattr(stops, "RETRY_S", 0.1)
    monkeypatch.setattr(stops, "WAKE_S", 0.05)
    monkeypatch.setattr(stops, "NEVER_HEARD_S", (0.0, 0.5, 1.0))
    listener = stops.StopListener(postgres_url)
    connected, connect = [], psycopg.connect

    def counting(*args, **kwargs):
        if kwargs.get("application_name") == stops.LISTENER_NAME and threading.current_thread() is thread:
            connected.append(time.monotonic())
        return connect(*args, **kwargs)

    monkeypatch.setattr(stops.psycopg, "connect", counting)
    until = time.monotonic() + 4.5
    thread = threading.Thread(target=listener.run, args=(lambda *told: None, lambda: time.monotonic() < until))
    with caplog.at_level("INFO", logger="apsara.database"):
        thread.start()
        time.sleep(2.0)
        assert not listener.listening
        thread.join(10)
    assert not thread.is_alive()
    gaps = [later - earlier for earlier, later in zip(connected, connected[1:])]
    # Each connection waits PROBE_WAIT_S for its probe, then RETRY_S, then NEVER_HEARD_S's next.
    assert len(gaps) >= 3 and gaps[0] < 1.0 and gaps[1] > 0.75 and gaps[2] > 1.25, gaps
    # Only this listener's: other tests' apps may still run theirs in this process.
    warnings = [r for r in caplog.records if r.thread == thread.ident and "no probe ever came back" in r.getMessage()]
    assert [r.levelname for r in warnings][:3] == ["WARNING", "INFO", "INFO"]


def test_a_probe_whose_server_hangs_holds_up_neither_the_listener_nor_another_thread(postgres_url, monkeypatch):
    """A server that hangs as a probe is sent: the probe is lost, the listener goes on (and lets
    go when it is no longer wanted), and no second sender joins the one that hangs."""
    from apsara.database import stops

    release, sent = threading.Event(), []

    def hangs(conn, probe):
        sent.append(probe)
        release.wait(30)

    monkeypatch.setattr(stops.StopListener, "_probe", staticmethod(hangs))
    monkeypatch.setattr(stops, "PROBE_WAIT_S", 0.2)
    monkeypatch.setattr(stops, "RETRY_S", 0.1)
    monkeypatch.setattr(stops, "WAKE_S", 0.05)
    monkeypatch.setattr(stops, "NEVER_HEARD_S", (0.0,))
    listener = stops.StopListener(postgres_url)
    until = time.monotonic() + 1.5
    thread = threading.Thread(target=listener.run, args=(lambda *told: None, lambda: time.monotonic() < until))
    try:
        thread.start()
        time.sleep(1.0)  # a few connections made by now, each one's probe lost
        assert not listener.listening
        thread.join(2.0)
        assert not thread.is_alive()
        assert len(sent) == 1
    finally:
        release.set()


def test_a_replica_keeps_what_it_read_yet_sees_every_change_made_elsewhere(postgres_url, tmp_path, fake):
    empty(postgres_url)
    STORE["database_url"] = postgres_url
    try:
        apps = [create_app(make_settings(tmp_path / name, gemini_api_key="k", gemini_base_url=fake.url))
                for name in ("one", "two")]
        one, two = (app.test_client() for app in apps)
        kept = apps[1].extensions["apsara"].store._cache

        def texts(client, cid="c1"):
            return [m["text"] for m in client.get(f"{API}/{cid}").json["messages"]]

        one.post(API, json={"id": "c1"})
        one.post(f"{API}/c1/messages", json={"text": "first"})
        assert texts(two) == texts(one)
        first_message = kept.get(("local", "c1"))[0]["messages"][0]
        one.post(f"{API}/c1/messages", json={"text": "second"})  # appended by the other replica
        assert texts(two) == texts(one) and len(texts(two)) == 4
        assert kept.get(("local", "c1"))[0]["messages"][0] is first_message  # brought up to date, not read again

        store = apps[0].extensions["apsara"].store
        one.post(f"{API}/c1/messages", json={"text": "third"})  # not read by two before the rewrite
        with store.locked("local", "c1"):  # rewritten there (a compaction), then appended to
            store.write("local", "c1", store.read("local", "c1"))
        one.post(f"{API}/c1/messages", json={"text": "fourth"})
        assert texts(two) == texts(one) and len(texts(two)) == 8

        # Deleted there and made again under the same id, shorter: not the old one's records.
        one.post(API, json={"id": "c2"})
        one.post(f"{API}/c2/messages", json={"text": "old 1"})
        one.post(f"{API}/c2/messages", json={"text": "old 2"})
        assert len(texts(two, "c2")) == 4
        assert one.delete(f"{API}/c2").status_code == 204
        one.post(API, json={"id": "c2"})
        one.post(f"{API}/c2/messages", json={"text": "new"})
        assert texts(two, "c2") == texts(one, "c2") and texts(two, "c2")[0] == "new"
    finally:
        STORE["database_url"] = None


def test_what_a_transaction_read_is_not_kept_when_it_rolls_back(on_database):
    client = on_database.test_client()
    client.post(API, json={"id": "c1", "title": "Real"})
    store = on_database.extensions["apsara"].store
    assert store.read("local", "c1")["conversation"]["title"] == "Real"  # kept by this worker
    header = {**store.read_header("local", "c1"), "title": "Never committed"}
    with pytest.raises(RuntimeError):
        with store.locked("local", "c1"):
            store.append("local", "c1", [record(0, "conversation", now_iso(), conversation=header)])
            assert store.read("local", "c1")["conversation"]["title"] == "Never committed"  # its own view
            raise RuntimeError("the change fails before it commits")
    assert store.read("local", "c1")["conversation"]["title"] == "Real"
    assert client.patch(f"{API}/c1", json={"title": "Later"}).status_code == 200
    assert client.get(f"{API}/c1").json["title"] == "Later" and store.read("local", "c1")["conversation"]["title"] == "Later"


def test_the_flags_migration_reads_old_headers_even_those_jsonb_refuses(fresh_database):
    # Before the flags were columns, a listing cast every header to jsonb, which refuses a
    # \u0000 in a title: one such conversation made the user's every listing a 500.
    import orjson

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        migrate_up_to = [m for m in MIGRATIONS if m[0] < 5]
        for version, name, sql in migrate_up_to:
            conn.execute(sql)
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.cursor().executemany("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                  [(version, name) for version, name, _ in migrate_up_to])
        stamp = now_iso()
        for cid, header in (("plain", {"title": "t"}), ("kept", {"title": "t", "archived": True, "pinned": True}),
                            ("nul", {"title": "a\x00b", "temporary": True, "pinned": True})):
            header = {"id": cid, "created_at": stamp, "updated_at": stamp, **header}
            conn.execute("INSERT INTO conversations (owner, id, snapshot, snapshot_seq, generation, seq, "
                         "record_bytes, header, updated_at, updated_ns, message_count) "
                         "VALUES ('u', %s, %s, 0, 1, 0, 0, %s, %s, 1, 0)",
                         (cid, orjson.dumps({"conversation": header, "messages": []}), orjson.dumps(header), stamp))
        assert migrate(conn) == [version for version, _, _ in MIGRATIONS if version >= 5]
        rows = conn.execute("SELECT id, archived, pinned, temporary FROM conversations ORDER BY id").fetchall()
    assert rows == [("kept", True, True, False), ("nul", False, True, True), ("plain", False, False, False)]


def test_a_nul_in_a_title_breaks_no_listing_search_or_sweep(on_database):
    client = on_database.test_client()
    for cid, fields in (("odd", {"title": "a\u0000b zebra"}), ("gone", {"title": "a\u0000b", "temporary": True}),
                        ("pin", {"title": "zebra"})):
        assert client.post(API, json={"id": cid, **fields}).status_code == 201
    assert client.patch(f"{API}/pin", json={"archived": True, "pinned": True}).status_code == 200

    def listed(query=""):
        response = client.get(f"{API}?{query}")
        assert response.status_code == 200, response.json
        return [c["id"] for c in response.json["conversations"]]

    assert listed() == ["odd"] and listed("q=zebra") == ["odd"]
    assert listed("archived=true") == ["pin"] and listed("archived=true&pinned=true&q=zebra") == ["pin"]
    assert listed("temporary=true") == ["gone"]
    store = on_database.extensions["apsara"].store
    assert store.expired_temporary(time.time_ns() + 10**12) == [("local", "gone")]


def test_a_message_past_what_a_tsvector_holds_is_stored_and_found(on_database):
    # PostgreSQL's tsvector holds 1 MB: such a message was a 500 here, and 201 with the files.
    client = on_database.test_client()
    client.post(API, json={"id": "long"})
    text = " ".join(f"word{n:06d}" for n in range(90_000))  # 990,000 characters: 1.4 MB of tsvector
    assert client.post(f"{API}/long/messages", json={"text": text}).status_code == 201
    assert [c["id"] for c in client.get(f"{API}?q=word000001").json["conversations"]] == ["long"]
