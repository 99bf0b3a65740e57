"""Rows held for a running process: budget reservations, open-stream slots.

Each row names its holder by pid and host, so a turn or stream whose process
died (or, on another machine, went silent for too long) stops holding.
"""
from __future__ import annotations

import os
import socket
from typing import Callable

HOST = socket.gethostname()


def holder_alive(pid: int, host: str) -> bool:
    if host != HOST:
        return True  # another machine's process: trusted until stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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
