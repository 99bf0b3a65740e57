"""A throwaway PostgreSQL server for tests: a cluster in a temporary folder, gone afterwards.

Uses Debian's `postgresql` package (initdb, pg_ctl). As root the server runs as
the `postgres` user (PostgreSQL refuses to run as root). Outside CI a machine
without the package skips the tests that need it; in CI (CI=true) they fail.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from apsara.devserver import free_port

# The database the current test's apps use (None: the file store); set by the `store_kind` fixture.
STORE = {"database_url": None}
TABLES = ("search_texts", "conversation_records", "conversations", "file_chunks", "files", "shared_settings", "usage", "spend",
          "reservations", "rate_counters", "stream_slots")


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def require_bindir() -> str:
    bindir = _bindir()
    if bindir is None:
        message = ("PostgreSQL is not installed (Debian: apt-get install postgresql): "
                   "the tests of the PostgreSQL store are skipped")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class Server:
    """A PostgreSQL server of its own in `folder`, stopped and started again at will."""

    def __init__(self, bindir: str, folder: str):
        self.bindir, self.folder = bindir, folder
        self.data = os.path.join(folder, "data")
        self.port = free_port()
        self.url = f"postgresql://apsara@127.0.0.1:{self.port}/apsara"

    def _run(self, *args) -> None:
        subprocess.run(_as_server_user(list(args)), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def create(self) -> None:
        self._run(f"{self.bindir}/initdb", "-D", self.data, "-U", "apsara", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run(f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "apsara", "apsara")

    def start(self) -> None:
        # fsync off: a test server that dies takes its data with it anyway.
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=400")
        self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.folder, "log"),
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """mode "fast" closes every connection, as a restart does; "immediate" as a crash does."""
        subprocess.run(_as_server_user([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def server():
    """Yields a fresh, running `Server` with an empty database; gone afterwards."""
    bindir = require_bindir()
    folder = tempfile.mkdtemp(prefix="apsara-pg-")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    running = Server(bindir, folder)
    try:
        running.create()
        yield running
    finally:
        running.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def cluster():
    """Yields a postgresql:// URL of a fresh database on a fresh server."""
    with server() as running:
        yield running.url


def empty(url: str) -> None:
    """Remove every row (the schema stays): a test starts from nothing."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('conversations')").fetchone()[0]
        if exists:
            conn.execute("TRUNCATE " + ", ".join(TABLES))


def server_env() -> dict:
    """What a Gunicorn server under test needs to use the current test's store."""
    return {"APSARA_DATABASE_URL": STORE["database_url"]} if STORE["database_url"] else {}


def current_store(tmp_path):
    """The conversation store the current test's apps use (files under tmp_path/data, or the database)."""
    from apsara.stores import open_stores
    from tests.conftest import make_settings

    return open_stores(make_settings(tmp_path)).conversations
