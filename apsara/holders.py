"""Rows held for a running process: budget reservations, open-stream slots.

Each row names its holder by pid and host, so a turn or stream whose process
died (or, on another machine, went silent for too long) stops holding.
"""
from __future__ import annotations

import os
import socket
from typing import Callable

HOST = socket.gethostname()


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
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    after_name = stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses
    return f"{_BOOT_ID}:{int(after_name[19])}"  # field 22 of proc(5), counted from the state (3)


def holder_alive(pid: int, host: str, started_as: str | None = None) -> bool:
    """Whether the process `pid` of `host` may still be running. `started_as`: its
    `process_start()` when it took the hold: a process of that pid started otherwise is another."""
    if host != HOST:
        return True  # another machine's process: trusted until stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started_as is not None:
        now = process_start(pid)
        return now is None or now == started_as
    return True


def still_held(rows, now: float, stale_s: float, drop: Callable[[str], None]) -> list:
    """The rows (id, ..., pid, host, started) whose holder may still be running;
    `drop(id)` is called for each of the others."""
    held = []
    for row in rows:
        pid, host, started = row[-3:]
        if now - started > stale_s or not holder_alive(pid, host):
            drop(row[0])
        else:
            held.append(row)
    return held
