"""Rows held for a running process: budget reservations, open-stream slots.

Each row names its holder by pid, host and process start, and carries `seen`, the
last time its holder said it was still running. A row stops holding when its holder
is gone: on this machine the kernel says so (that pid is not running, or runs a
process started later); a row of another machine whose `seen` has not moved for
`SILENT_AFTER_S` belongs to a process that died with its machine or container. The
holding process refreshes `seen` of all its rows every `HEARTBEAT_S` from a small
daemon thread (`heartbeat`), running while it holds any. `seen` is written and read
by one clock: PostgreSQL's for the replicas' rows (their own clocks may disagree by
more than SILENT_AFTER_S), this machine's for the SQLite file.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

HOST = socket.gethostname()
# The holder refreshes its rows this often; a row of another machine not refreshed for
# SILENT_AFTER_S (three beats missed) is a dead process's.
HEARTBEAT_S = 10.0
SILENT_AFTER_S = 30.0
# PostgreSQL's clock in epoch seconds: the one clock every replica writes and reads `seen` by.
DB_NOW = "extract(epoch FROM clock_timestamp())"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def process_start(pid: int) -> str | None:
    """When a process started: the boot and the clock ticks since it, as the kernel tells
    (None where there is no /proc). A pid handed out again, after a crash, a reboot or a
    container's restart (same hostname, same low pids), belongs to a process started later."""
    fields = _stat(pid)
    return None if fields is None else _started(fields)


def _started(fields: list[bytes]) -> str:
    """process_start() of a process whose _stat() this is."""
    return f"{_BOOT_ID}:{int(fields[19])}"  # field 22 of proc(5), counted from the state (3)


def _stat(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from its state (field 3) on; None where there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses


_own_start: dict[int, str | None] = {}  # this process's process_start(), by pid (a fork is another process)


def this_process() -> tuple[int, str | None]:
    """(pid, process_start) of the calling process: what a row it takes names as its holder."""
    pid = os.getpid()
    if pid not in _own_start:
        _own_start[pid] = process_start(pid)
    return pid, _own_start[pid]


def holder_alive(pid: int, host: str, started_as: str | None = None) -> bool:
    """Whether the process `pid` of `host` may still be running. `started_as`: its
    `process_start()` when it took the hold: a process of that pid started otherwise is another."""
    if host != HOST:
        return True  # another machine's process: the kernel cannot tell; `seen` does (still_held)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is not None and fields[0] in (b"Z", b"X"):
        return False  # killed, and not yet reaped by its parent: it runs no more
    if started_as is not None and fields is not None:
        return _started(fields) == started_as
    return True


def still_held(rows, now: float, stale_s: float, drop: Callable[[str], None]) -> list:
    """The rows (id, ..., pid, host, started, process, silent_s) whose holder may still be
    running; `drop(id)` is called for each of the others. `silent_s`: the seconds since
    `seen`, as the clock that writes it tells. `process` and `silent_s` are None in rows
    taken by versions that did not write them: those hold until `stale_s`."""
    held = []
    for row in rows:
        pid, host, started, process, silent_s = row[-5:]
        silent = host != HOST and silent_s is not None and silent_s > SILENT_AFTER_S
        if now - started > stale_s or silent or not holder_alive(pid, host, process):
            drop(row[0])
        else:
            held.append(row)
    return held


# The columns a held row gained after the first release, added to the SQLite tables of older files.
HOLDER_COLUMNS = {"process": "TEXT", "seen": "REAL"}


def add_holder_columns(sql, table: str) -> None:
    """Give an SQLite table of held rows, made by an older version, the columns it lacks."""
    have = {row[1] for row in sql.execute(f"PRAGMA table_info({table})")}
    for name, kind in HOLDER_COLUMNS.items():
        if name not in have:
            sql.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class Heartbeat:
    """Refreshes `seen` of the rows this process holds, every HEARTBEAT_S, while it holds any.

    A store calls `holding(refresh)` after taking a row; `refresh(pid, process)` sets
    `seen` to now on every row of this host, pid and process in its tables and returns how
    many it touched. A store whose refresh touched none holds nothing any more and is left
    out until it takes a row again; with none left the thread ends. One thread per process:
    a forked child starts its own (its parent's rows are not its own). Under gevent's
    patching the thread is a greenlet and its sleep yields.
    """

    def __init__(self, every_s: float = HEARTBEAT_S):
        self.every_s = every_s
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A new lock: one held by a parent's thread at the fork would stay held. It is never
        # held across anything that could yield to another greenlet.
        self._lock = threading.Lock()
        self._refreshes: dict[Callable, int] = {}  # refresh -> when it was last asked for, counted in takes
        self._takes = 0
        self._running = False

    @property
    def running(self) -> bool:
        """Whether its thread runs: this process holds rows, or did until the last beat."""
        return self._running

    def holding(self, refresh: Callable[[int, str | None], int]) -> None:
        with self._lock:
            self._takes += 1
            self._refreshes[refresh] = self._takes
            start, self._running = not self._running, True
        if start:  # outside the lock: under gevent, starting a thread yields to others
            threading.Thread(target=self._run, name="apsara-holds-heartbeat", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self._lock:
                refreshes = dict(self._refreshes)
            pid, process = this_process()
            idle = []
            for refresh, taken in refreshes.items():
                try:
                    if refresh(pid, process) == 0:
                        idle.append((refresh, taken))
                except Exception:  # the database is away: keep trying, the rows still count as ours
                    log.warning("could not refresh the rows this process holds", exc_info=True)
            with self._lock:
                for refresh, taken in idle:
                    if self._refreshes.get(refresh) == taken:  # no row taken since: it holds none
                        del self._refreshes[refresh]
                if not self._refreshes:
                    self._running = False
                    return


heartbeat = Heartbeat()
