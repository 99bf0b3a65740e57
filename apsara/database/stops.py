"""Stop requests told to every replica as they commit: PostgreSQL's LISTEN/NOTIFY.

A stop request, or a deleted conversation, is written to the database; the
replica running the reply would only find it by asking, several times a second
for each reply it runs. So the transaction that writes one also sends a
notification, and each replica keeps one connection listening: the reply stops
as the request commits. Running replies still ask now and then, in case a
notification was missed: every 0.25 s while this process is not listening,
every few seconds while it is. It counts as listening once a probe it sent
itself came back: behind a pooler that does not pass LISTEN on (PgBouncer in
transaction mode), none does, and replies keep asking often.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Callable

import orjson
import psycopg

log = logging.getLogger("apsara.database")

CHANNEL = "apsara_stop"
ASK_S = 0.25  # how often a running reply asks for a stop request while this process is not listening
ASK_LISTENING_S = 5.0  # and while it is
RETRY_S = 1.0  # before listening again after the connection failed
WAKE_S = 1.0  # how often the listener looks whether it is still wanted


def notify(conn, owner: str, conversation_id: str, reply_id: str | None = None) -> None:
    """Tell every listener, when `conn`'s transaction commits, that this reply (None: every
    reply of the conversation) must stop."""
    _send(conn, {"owner": owner, "conversation": conversation_id, "reply": reply_id})


def _send(conn, told: dict) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, orjson.dumps(told).decode()))


class StopListener:
    """One per store and process: a connection of its own, listening while replies run here."""

    def __init__(self, url: str):
        self.url = url
        self._listening_in: int | None = None  # the pid whose connection is listening now

    @property
    def listening(self) -> bool:
        return self._listening_in == os.getpid()

    def run(self, on_stop: Callable[[str, str, str | None], None], wanted: Callable[[], bool]) -> None:
        """Call `on_stop(owner, conversation_id, reply_id or None)` for each notification,
        until `wanted()` is false; a failed connection is made again."""
        while wanted():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    probe = secrets.token_hex(8)
                    self._probe(conn, probe)
                    while wanted():
                        for note in conn.notifies(timeout=WAKE_S):
                            self._heard(_parsed(note.payload), probe, on_stop)
            except psycopg.Error as exc:
                log.warning("not listening for stop requests (%s): replies ask every %.2f s meanwhile",
                            type(exc).__name__, ASK_S)
                time.sleep(RETRY_S)
            finally:
                self._listening_in = None

    @staticmethod
    def _probe(conn, probe: str) -> None:
        _send(conn, {"probe": probe})

    def _heard(self, told: dict | None, probe: str, on_stop) -> None:
        if told is None:
            return
        if "probe" in told:  # ours came back: notifications reach this connection (others' are not news)
            if told["probe"] == probe:
                self._listening_in = os.getpid()
            return
        try:
            on_stop(told["owner"], told["conversation"], told["reply"])
        except Exception:  # one reply's trouble must not stop the listening for the others
            log.exception("stopping reply %s", told["reply"])


def _parsed(payload: str) -> dict | None:
    try:
        told = orjson.loads(payload)
    except ValueError:
        told = None
    if isinstance(told, dict) and ("probe" in told or {"owner", "conversation", "reply"} <= told.keys()):
        return told
    log.warning("a notification on %s that is not ours: ignored", CHANNEL)
    return None
