"""Stop requests told to every replica as they commit: PostgreSQL's LISTEN/NOTIFY.

A stop request, or a deleted conversation, is written to the database; the
replica running the reply would only find it by asking, several times a second
for each reply it runs. So the transaction that writes one also sends a
notification, and each replica keeps one connection listening: the reply stops
as the request commits. Running replies still ask now and then, in case a
notification was missed (the listening connection dropped, or a pooler in front
of the database that does not pass LISTEN on): every 0.25 s while this process
is not listening, every few seconds while it is.
"""
from __future__ import annotations

import logging
import os
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
    payload = orjson.dumps({"owner": owner, "conversation": conversation_id, "reply": reply_id}).decode()
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


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
                    self._listening_in = os.getpid()
                    while wanted():
                        for note in conn.notifies(timeout=WAKE_S):
                            self._tell(note.payload, on_stop)
            except psycopg.Error as exc:
                log.warning("not listening for stop requests (%s): replies ask every %.2f s meanwhile",
                            type(exc).__name__, ASK_S)
                time.sleep(RETRY_S)
            finally:
                self._listening_in = None

    @staticmethod
    def _tell(payload: str, on_stop) -> None:
        try:
            told = orjson.loads(payload)
            owner, conversation_id, reply_id = told["owner"], told["conversation"], told["reply"]
        except (ValueError, KeyError, TypeError):
            log.warning("a stop notification that is not ours: ignored")
            return
        try:
            on_stop(owner, conversation_id, reply_id)
        except Exception:  # one reply's trouble must not stop the listening for the others
            log.exception("stopping reply %s of conversation %s", reply_id, conversation_id)
