"""Rate limits on PostgreSQL: request and upload counters, and open-stream slots, shared by replicas.

The same windows and slots as ratelimits.py keeps in SQLite for the workers of one
machine. Counters are one row per key (`INSERT ... ON CONFLICT` counts atomically);
a user's stream slots are counted and taken under a transaction-level advisory lock
per user, so two replicas never both hand out the last slot. A slot's `seen` is the
database's clock (`DB_NOW`), whichever replica writes or reads it.
"""
from __future__ import annotations

import time

import limits
import psycopg
from limits.strategies import FixedWindowRateLimiter

from ..clock import new_id
from ..holders import DB_NOW, HOST, heartbeat, still_held, this_process
from ..ratelimits import RATES, STALE_STREAM_S, RateLimits, TableCounters
from . import Database


class PgCounters(TableCounters):
    """A `limits` storage in the database: fixed-window counters every replica shares."""

    def __init__(self, db: Database, **options):
        super().__init__(None, wrap_exceptions=False, **options)
        self.db = db

    @property
    def base_exceptions(self):
        return psycopg.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self.db.connection() as conn:
            # A window that has run out starts again from this hit.
            return conn.execute(
                "INSERT INTO rate_counters VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN rate_counters.expires <= %s THEN EXCLUDED.count "
                "ELSE rate_counters.count + EXCLUDED.count END, "
                "expires = CASE WHEN rate_counters.expires <= %s THEN EXCLUDED.expires "
                "ELSE rate_counters.expires END RETURNING count",
                (key, amount, now + expiry, now, now)).fetchone()[0]

    def _row(self, key: str):
        with self.db.connection() as conn:
            row = conn.execute("SELECT count, expires FROM rate_counters WHERE key = %s", (key,)).fetchone()
        return row if row and row[1] > time.time() else None

    def check(self) -> bool:
        return self.db.ping()

    def reset(self) -> int | None:
        with self.db.connection() as conn:
            return conn.execute("DELETE FROM rate_counters").rowcount

    def clear(self, key: str) -> None:
        with self.db.connection() as conn:
            conn.execute("DELETE FROM rate_counters WHERE key = %s", (key,))


class PgRateLimits(RateLimits):
    def __init__(self, config: dict, db: Database, storage_uri: str | None = None):
        from limits.storage import storage_from_string

        self.config = config
        self.pg = db
        storage = storage_from_string(storage_uri) if storage_uri else PgCounters(db)
        self.limiter = FixedWindowRateLimiter(storage)
        self.rates = {name: limits.parse(config[name]) for name in RATES if name in config}

    def open_stream(self, user: str) -> str | None:
        allowed = self.config.get("streams")
        if allowed is None:
            return None
        slot, now = new_id("s"), time.time()
        pid, process = this_process()
        with self.pg.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("streams/" + user,))
            rows = conn.execute(f"SELECT id, pid, host, started, process, {DB_NOW} - seen FROM stream_slots "
                                "WHERE owner = %s", (user,)).fetchall()
            self.refuse_if_full(allowed, len(still_held(
                rows, now, STALE_STREAM_S,
                drop=lambda sid: conn.execute("DELETE FROM stream_slots WHERE id = %s", (sid,)))))
            conn.execute("INSERT INTO stream_slots (id, owner, pid, host, started, process, seen) "
                         f"VALUES (%s, %s, %s, %s, %s, %s, {DB_NOW})", (slot, user, pid, HOST, now, process))
        heartbeat.holding(self.refresh_streams)
        return slot

    def refresh_streams(self, pid: int, process: str | None) -> int:
        with self.pg.connection() as conn:
            return conn.execute(f"UPDATE stream_slots SET seen = {DB_NOW} WHERE host = %s AND pid = %s "
                                "AND process IS NOT DISTINCT FROM %s::text", (HOST, pid, process)).rowcount

    def close_stream(self, slot: str | None) -> None:
        if slot is None:
            return
        with self.pg.connection() as conn:
            conn.execute("DELETE FROM stream_slots WHERE id = %s", (slot,))
