"""Who is writing a reply, and whether they still live.

A reply being written carries its writer (`_writer`: host, pid, when it last
checkpointed). On this host a writer lives while its process does; on another
machine it is presumed dead after WRITER_SILENCE_S without a checkpoint. A reply
whose writer died reads as `interrupted` and no longer holds the conversation.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from ..clock import now_iso
from ..holders import HOST, holder_alive, this_process
from .tree import MessageTree

# A reply's writer on another machine is presumed dead after this long without a
# checkpoint; writers checkpoint at least every HEARTBEAT_S while they live.
WRITER_SILENCE_S = 15.0
HEARTBEAT_S = 5.0


def age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (datetime.now(timezone.utc) - then).total_seconds()


# Replies this process gave up writing: storing their end failed for no passing reason (a
# bug). Dead to this process's readers, and its next message records them interrupted;
# other processes see them streaming until this one exits.
_abandoned: set[str] = set()


def abandon(reply_id: str) -> None:
    _abandoned.add(reply_id)


def writer_alive(message: dict) -> bool:
    writer = message.get("_writer") or {}
    if writer.get("host") != HOST:
        return age_s(writer.get("seen")) < WRITER_SILENCE_S  # another machine's process
    pid = writer.get("pid")
    if pid == os.getpid() and message.get("id") in _abandoned:
        return False
    if not isinstance(pid, int):
        return True  # no pid recorded: presumed alive
    if (pid, writer.get("pid_start")) == this_process():
        return True  # this very process (no need to ask /proc)
    return holder_alive(pid, HOST, writer.get("pid_start"))


def new_writer() -> dict:
    pid, started_as = this_process()
    return {"pid": pid, "host": HOST, "pid_start": started_as, "started": time.time(), "seen": now_iso()}


def streaming(tree: MessageTree) -> tuple[list[dict], list[dict]]:
    """(replies being written, replies whose writer died)."""
    alive, dead = [], []
    for message in tree.streaming():
        (alive if writer_alive(message) else dead).append(message)
    return alive, dead
