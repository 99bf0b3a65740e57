"""SQLite's WAL checkpoints, off the writers' path.

In WAL mode SQLite copies the log back into the database file (a checkpoint,
with its fsyncs) inside whichever commit takes the log past 1,000 pages: now and
then one index write of a turn took 2-15 ms instead of 0.1, and the turn waited
for it. Writers here only count their commits; a thread of the OS's own (never a
greenlet: SQLite calls do not yield) checkpoints every second when there were
some, with a connection of its own and PASSIVE, so it never waits for a writer.
It still slows the writes made while it runs (its fsyncs and theirs go to one
disk): checkpointing every 0.2 s, a 500-turn conversation's turns (~100 ms
each, most overlapping a checkpoint) saw their usage write take 0.68 ms instead
of 0.33 and their index write 8.5 ms instead of 0.7, medians. A writer's
connection lets the log grow to SAFETY_PAGES before SQLite checkpoints in a
commit itself: the safety net should this thread fall behind (a busy index
writes ~1,000 pages a second).

The thread ends after a few seconds without writes (a test process opens many
databases), and the next write starts another; a forked child starts its own.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .durable import native, native_lock

EVERY_S = 1.0
IDLE_ROUNDS = 5  # ~5 s without a write: the thread ends
SAFETY_PAGES = 10_000  # ~40 MB of log


def switch_to_wal(connection: sqlite3.Connection, timeout_s: float) -> None:
    """WAL mode, which the file keeps once set. Setting it needs the file to itself, and
    SQLite answers "locked" at once, without its busy wait, while another process opens
    the same new file (two workers starting on a fresh data folder): asked again meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class Checkpointer:
    """One per database file and process (see `for_file`)."""

    def __init__(self, path: Path):
        self.path = path
        self._writes = 0
        self._running_in: int | None = None  # the pid whose thread is running

    @staticmethod
    def writer_settings(connection: sqlite3.Connection) -> None:
        """For a connection that writes: checkpoints are this thread's, unless it falls far behind."""
        connection.execute(f"PRAGMA wal_autocheckpoint={SAFETY_PAGES}")

    def wrote(self) -> None:
        """A commit was made: the log is checkpointed within EVERY_S."""
        self._writes += 1
        self._start()

    def _start(self) -> None:
        if self._running_in != os.getpid():
            self._running_in = os.getpid()
            native("_thread", "start_new_thread")(self._run, ())

    def _run(self) -> None:
        sleep = native("time", "sleep")
        idle = 0
        try:
            while idle < IDLE_ROUNDS or self._writes:
                sleep(EVERY_S)
                if not self._writes:
                    idle += 1
                    continue
                self._writes, idle = 0, 0
                self._checkpoint()
        finally:
            self._running_in = None
            if self._writes:  # one came as this thread was ending, and saw it running
                self._start()

    def _checkpoint(self) -> None:
        """With a connection of its own, made for it: a waiting thread holds no file open (a test
        process makes hundreds of databases), and never makes one that was removed (`mode=rw`)."""
        with _IN_SQLITE:
            try:
                connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None)
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    connection.close()
            except sqlite3.Error:  # busy or gone: the next round, or SQLite's own, does it
                pass


# Held while the thread is inside SQLite, and by a fork: a child must not start with a lock of
# SQLite's own taken by a thread it does not have.
_IN_SQLITE = native_lock()
os.register_at_fork(before=_IN_SQLITE.acquire, after_in_parent=_IN_SQLITE.release,
                    after_in_child=_IN_SQLITE.release)

_ALL: dict[Path, Checkpointer] = {}
_ALL_LOCK = native_lock()


def for_file(path: Path) -> Checkpointer:
    path = Path(path)
    with _ALL_LOCK:
        checkpointer = _ALL.get(path)
        if checkpointer is None:
            checkpointer = _ALL[path] = Checkpointer(path)
        return checkpointer
