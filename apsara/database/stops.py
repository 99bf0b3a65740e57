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

A connection can also die without a word (a NAT or firewall that forgot it, a
server that hangs): no error, no data, and it would count as listening forever
while replies ask only every few seconds. So it has TCP keepalives, and it sends
itself a probe every PROBE_EVERY_S from a short-lived connection of its own,
through the server as any stop request goes; one that has not come back within
PROBE_WAIT_S means the connection is deaf: it stops counting as listening and is
made again. The listening connection itself sends nothing after its LISTEN, and
the listener does not wait for a probe's own connection (a thread of its own
sends it, one at a time): a statement would wait for ever on a server that hung,
which the lost probe tells instead. A connection that never heard a probe (a
pooler, or a server that hung as it began to listen) is made again too, each
time a little later (NEVER_HEARD_S), so that behind a pooler the listener does
not keep reconnecting.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import Callable

import orjson
import psycopg

log = logging.getLogger("apsara.database")

CHANNEL = "apsara_stop"
ASK_S = 0.25  # how often a running reply asks for a stop request while this process is not listening
ASK_LISTENING_S = 5.0  # and while it is
RETRY_S = 1.0  # before listening again after the connection failed
WAKE_S = 0.5  # how often the listener looks whether it is still wanted, and at its probe
PROBE_EVERY_S = 5.0  # how often a listening connection checks it still hears notifications
PROBE_WAIT_S = 2.0  # how long a probe may take to come back before the connection counts as deaf
# Before making again a connection that never heard a probe: the first time, then each next in a row.
NEVER_HEARD_S = (0.0, 5.0, 15.0, 60.0)
# The kernel drops a connection whose peer went away within ~25 s, even while nothing is sent;
# connect_timeout: a server that does not answer never holds the listener up for long.
# application_name: an operator tells it in pg_stat_activity.
LISTENER_NAME = "apsara stop listener"
PROBE_NAME = "apsara stop probe"
CONNECT = {"autocommit": True, "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
           "keepalives_interval": 5, "keepalives_count": 3, "application_name": LISTENER_NAME}


class Deaf(Exception):
    """The listening connection does not hear its own probes."""

    def __init__(self, message: str, never_heard: bool):
        super().__init__(message)
        self.never_heard = never_heard


def notify(conn, owner: str, conversation_id: str, reply_id: str | None = None) -> None:
    """Tell every listener, when `conn`'s transaction commits, that this reply (None: every
    reply of the conversation) must stop."""
    _send(conn, {"owner": owner, "conversation": conversation_id, "reply": reply_id})


def _send(conn, told: dict) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, orjson.dumps(told).decode()))


class _Hearing:
    """One listening connection's state: whether its probes come back. Each connection has its
    own: a listener that has just been let go (its replies ended) may still be winding down
    while the next one starts, and must not reset what the next one found."""

    def __init__(self):
        self.heard_in: int | None = None  # the pid in which its first probe came back
        self.awaited: str | None = None  # the probe sent and not yet heard back
        self.sent_at = float("-inf")  # when it was sent (time.monotonic); none yet: the first goes at once


class StopListener:
    """One per store and process: a connection of its own, listening while replies run here."""

    def __init__(self, url: str):
        self.url = url
        self._hearing: _Hearing | None = None  # the newest connection's
        self._never_heard = 0  # connections in a row that heard no probe of theirs
        self._sender: threading.Thread | None = None  # sending the last probe

    @property
    def listening(self) -> bool:
        hearing = self._hearing
        return hearing is not None and hearing.heard_in == os.getpid()

    def run(self, on_stop: Callable[[str, str, str | None], None], wanted: Callable[[], bool]) -> None:
        """Call `on_stop(owner, conversation_id, reply_id or None)` for each notification,
        until `wanted()` is false; a failed or deaf connection is made again."""
        while wanted():
            hearing = self._hearing = _Hearing()
            try:
                with psycopg.connect(self.url, **CONNECT) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while wanted():
                        self._check_hearing(hearing)
                        for note in conn.notifies(timeout=WAKE_S):
                            self._heard(_parsed(note.payload), hearing, on_stop)
            except (psycopg.Error, Deaf) as exc:
                never_heard = isinstance(exc, Deaf) and exc.never_heard
                self._never_heard = self._never_heard + 1 if never_heard else 0
                # Behind a pooler every connection hears nothing: said once, not at every one.
                (log.info if self._never_heard > 1 else log.warning)(
                    "not listening for stop requests (%s%s): replies ask every %.2f s meanwhile",
                    type(exc).__name__, ", no probe ever came back" if never_heard else "", ASK_S)
                later = NEVER_HEARD_S[min(self._never_heard, len(NEVER_HEARD_S)) - 1] if never_heard else 0.0
                deadline = time.monotonic() + RETRY_S + later
                while time.monotonic() < deadline and wanted():
                    time.sleep(min(WAKE_S, RETRY_S))
            finally:
                if self._hearing is hearing:
                    self._hearing = None

    def _check_hearing(self, hearing: _Hearing) -> None:
        """Probe now and then, and give the connection up when a probe is lost."""
        now = time.monotonic()
        if hearing.awaited is not None and now - hearing.sent_at > PROBE_WAIT_S:
            raise Deaf(f"a probe did not come back within {PROBE_WAIT_S} s", never_heard=hearing.heard_in is None)
        if hearing.awaited is None and now - hearing.sent_at >= PROBE_EVERY_S:
            hearing.awaited = probe = secrets.token_hex(8)
            hearing.sent_at = now
            sender = self._sender
            if sender is None or not sender.is_alive():  # else the last one hangs: this one is lost
                self._sender = threading.Thread(target=self._send_probe, args=(probe,), daemon=True,
                                                name="apsara-stop-probe")
                self._sender.start()

    def _send_probe(self, probe: str) -> None:
        """From a connection of its own, as a stop request travels. What goes wrong only loses the
        probe, which the listener finds out."""
        try:
            with psycopg.connect(self.url, **{**CONNECT, "application_name": PROBE_NAME}) as sender:
                self._probe(sender, probe)
        except psycopg.Error:
            pass

    @staticmethod
    def _probe(conn, probe: str) -> None:
        _send(conn, {"probe": probe})

    def _heard(self, told: dict | None, hearing: _Hearing, on_stop) -> None:
        if told is None:
            return
        if "probe" in told:  # its own came back: notifications reach this connection (others' are not news)
            if told["probe"] == hearing.awaited:
                hearing.awaited = None
                hearing.heard_in = os.getpid()
                self._never_heard = 0
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
