"""The database goes away and comes back: Gunicorn replicas on a real PostgreSQL server,
stopped and started under them. A replica keeps running, answers 503 UNAVAILABLE for what
needs the database, and serves again by itself once the database is back."""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import threading
import time

import psycopg
import pytest
import requests

from apsara.database import stops
from apsara.testing.fake_gemini import FakeGemini, Reply
from tests.postgres import server as pg_server
from tests.servers import call, gunicorn
from tests.test_jobs_gunicorn import Events, _worker_pid

pytestmark = pytest.mark.slow

API = "/api/v1/conversations"
AUTH = {"Authorization": "Bearer key-of-ann"}
PASSWORD = "word-never-shown"


def _with_password(url: str) -> str:
    """The same database, with a password in the URL (trust auth ignores it): it must never show."""
    return url.replace("postgresql://apsara@", f"postgresql://apsara:{PASSWORD}@")


def _until(what, timeout: float = 15.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


def _unavailable(base: str) -> None:
    response = requests.get(f"{base}{API}", headers=AUTH, timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert int(response.headers["Retry-After"]) > 0
    assert PASSWORD not in response.text and "postgresql://" not in response.text


def test_a_worker_boots_without_the_database_and_serves_once_it_is_back(tmp_path):
    log = tmp_path / "gunicorn.log"
    with pg_server() as database:
        database.stop()  # away before any worker starts: no schema yet either
        env = {"APSARA_DATABASE_URL": _with_password(database.url), "APSARA_DATA_DIR": str(tmp_path / "data"),
               "APSARA_API_KEYS": "ann:key-of-ann"}
        with gunicorn(env, workers=1, log_path=log) as base:
            _unavailable(base)
            assert requests.get(f"{base}/health", timeout=10).json()["storage"] == "unwritable"

            database.start()
            assert _until(lambda: requests.get(f"{base}{API}", headers=AUTH, timeout=10).status_code == 200)
            assert requests.get(f"{base}/health", timeout=10).json()["storage"] == "ok"
            # The key that signs file URLs lives in the database: read once it is there.
            uploaded = requests.post(f"{base}/api/v1/files", headers=AUTH, timeout=10,
                                     files={"file": ("a.txt", b"hello\n", "text/plain")})
            assert uploaded.status_code == 201, uploaded.text
            signed = uploaded.json()["url"]
            assert requests.get(base + signed, timeout=10).content == b"hello\n"  # no bearer: the URL is the pass
            assert requests.get(base + signed.replace("signature=", "signature=0"), timeout=10).status_code != 200

            # A worker that dies while the database is away is replaced, and the replica stays up.
            worker = _worker_pid(base)
            database.stop()
            os.kill(worker, signal.SIGKILL)
            assert _until(lambda: _replaced(base, worker))
            _unavailable(base)
            database.start()
            assert _until(lambda: requests.get(f"{base}{API}", headers=AUTH, timeout=10).status_code == 200)
            assert requests.get(base + signed, timeout=10).content == b"hello\n"
    written = log.read_text(errors="replace")
    assert PASSWORD not in written
    assert "Traceback" not in written


def _replaced(base: str, worker: int) -> bool:
    try:
        return _worker_pid(base) != worker and requests.get(f"{base}/health/live", timeout=2).ok
    except (ValueError, requests.RequestException):  # between the old worker and the new one
        return False


def test_a_database_restart_fails_no_request(tmp_path):
    log = tmp_path / "gunicorn.log"
    with pg_server() as database:
        env = {"APSARA_DATABASE_URL": _with_password(database.url), "APSARA_DATA_DIR": str(tmp_path / "data")}
        with gunicorn(env, workers=1, log_path=log) as base:
            # Concurrent requests leave several connections idle in the pool...
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                codes = list(pool.map(lambda _: call("GET", f"{base}{API}")[0], range(48)))
            assert set(codes) == {200}
            # ...which the restart closes under them.
            database.stop()
            started = time.monotonic()
            status, body = call("GET", f"{base}{API}")
            assert (status, body["error"]["status"]) == (503, "UNAVAILABLE")
            assert time.monotonic() - started < 5  # a quick answer, not a wait for the pool
            database.start()
            codes = [call("GET", f"{base}{API}")[0] for _ in range(30)]
            assert codes == [200] * 30
    written = log.read_text(errors="replace")
    assert PASSWORD not in written
    assert "Traceback" not in written


def test_a_listener_that_went_deaf_is_replaced_and_stops_stay_quick(tmp_path):
    """A NAT that forgot the LISTEN connection leaves it silent: no error, no data. Its backend
    frozen with SIGSTOP does the same. A stop asked through another replica still lands fast."""
    fake = FakeGemini().start()
    frozen: list[int] = []
    try:
        with pg_server() as database:
            env = {"APSARA_DATABASE_URL": database.url, "gemini": "k", "GEMINI_BASE_URL": fake.url}
            with gunicorn({**env, "APSARA_DATA_DIR": str(tmp_path / "a")}, workers=1) as a, \
                    gunicorn({**env, "APSARA_DATA_DIR": str(tmp_path / "b")}, workers=1) as b, \
                    psycopg.connect(database.url, autocommit=True) as conn:
                gate = threading.Event()
                fake.push(Reply(parts=["read this", " not this"], hold=gate))
                try:
                    assert call("POST", f"{a}{API}", {"id": "c1"})[0] == 201
                    # A replica listens while it runs a reply.
                    stream = Events(a, "POST", f"{API}/c1/messages", {"text": "go", "stream": True})
                    stream.until(lambda event: event[0] == "delta")
                    reply_id = stream.seen[1][2]["id"]
                    assert _until(lambda: len(_listeners(conn)) == 1)
                    frozen = _listeners(conn)
                    # Frozen while it waits for its client, as a forgotten connection's is (frozen
                    # while reading the notification queue, it would hold the queue's lock, and
                    # every NOTIFY of the server would wait for it).
                    assert _until(lambda: _listening_idle(conn, frozen[0]))
                    os.kill(frozen[0], signal.SIGSTOP)
                    # It notices within a probe's round, and listens on a new connection.
                    assert _until(lambda: set(_listeners(conn)) - set(frozen), timeout=20)
                    started = time.monotonic()
                    assert call("POST", f"{b}{API}/c1/messages/{reply_id}/stop")[0] == 200
                    end = stream.rest()[-1]
                    assert end[2]["status"] == "stopped"
                    assert time.monotonic() - started < 1.5
                finally:
                    gate.set()
                    for pid in frozen:  # before the server stops: it would wait for a stopped backend
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGCONT)
    finally:
        fake.stop()


def _listening_idle(conn, pid: int) -> bool:
    row = conn.execute("SELECT state, wait_event, query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[:2] == ("idle", "ClientRead") and row[2].startswith("LISTEN")


def _listeners(conn) -> list[int]:
    """The backends of the replicas' LISTEN connections."""
    return [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                           (stops.LISTENER_NAME,))]
