"""The embedded database that workers on one machine share: SQLite in WAL mode.

The usage ledger, budget reservations, open-stream slots and rate-limit
counters must be the same for every Gunicorn worker, with nothing to install,
so they live in one SQLite file under the data folder. Each process opens its
own connection (again after a fork); writes are short `BEGIN IMMEDIATE`
transactions, so concurrent workers queue on SQLite's lock for microseconds.
`synchronous=NORMAL` in WAL mode survives a process crash; a power cut may lose
the last transactions, never corrupt the file. SQLite calls do not yield to
gevent: a worker waiting for another's write lock waits whole, which is why
every transaction here is a few statements long. WAL needs a local disk, not a
network file system.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from .. import checkpoints

BUSY_TIMEOUT_MS = 10_000


class SqliteDatabase:
    def __init__(self, path: Path, schema: str):
        self.path = Path(path)
        self._schema = schema
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._checkpoints = checkpoints.for_file(self.path)

    def _connect(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._connection is None or self._pid != pid:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per process, shared by its threads or greenlets under our lock.
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=BUSY_TIMEOUT_MS / 1000)
            checkpoints.switch_to_wal(connection, BUSY_TIMEOUT_MS / 1000)
            connection.execute("PRAGMA synchronous=NORMAL")
            self._checkpoints.writer_settings(connection)
            connection.executescript(self._schema)
            self._connection, self._pid = connection, pid
        return self._connection

    @contextlib.contextmanager
    def write(self):
        """A transaction that holds SQLite's write lock from its first statement."""
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        self._checkpoints.wrote()

    @contextlib.contextmanager
    def read(self):
        with self._lock:
            yield self._connect()
