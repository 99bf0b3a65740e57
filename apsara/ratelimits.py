"""Rate limits per user: requests and uploads per period, and reply streams open at once.

`APSARA_RATE_LIMITS` is `requests=120/minute,streams=4,uploads=60/hour` (any
subset; unset: no limits). Requests and uploads are counted by the `limits`
library (fixed windows). Its counters must be shared by every worker, or each
worker would allow the whole limit: by default they live in an SQLite file under
the data folder (`SqliteCounters`, shared by the workers of one machine);
`APSARA_RATE_LIMIT_STORAGE=redis://host:6379` (any `limits` storage URI) shares
them between replicas. Streams are slots held while a reply stream is open, in
the same SQLite file, each tagged with its process (see holders.py) so a killed
worker's slots are freed. Over a limit: 429 RESOURCE_EXHAUSTED with Retry-After.
`/health`, `/metrics` and the OpenAPI document are never limited.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import limits
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from . import metrics
from .clock import new_id
from .errors import ApiError
from .holders import HOST, add_holder_columns, heartbeat, still_held, this_process
from .usage.database import SqliteDatabase

RATES = ("requests", "uploads")
# A stream slot older than this belongs to a stream that cannot still be open (the outer
# bound; a slot of a process that died is freed long before, see holders.py).
STALE_STREAM_S = 6 * 3600
STREAM_RETRY_S = 5


class RateLimitError(ValueError):
    """An APSARA_RATE_LIMITS value the server cannot start with."""


def parse_rate_limits(raw: str | None) -> dict:
    """`requests=120/minute,streams=4,uploads=60/hour` -> {"requests": "120/minute", "streams": 4, ...}."""
    found: dict = {}
    for item in filter(None, (p.strip() for p in (raw or "").split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or name not in (*RATES, "streams") or name in found:
            raise RateLimitError("APSARA_RATE_LIMITS looks like requests=120/minute,streams=4,uploads=60/hour "
                                 f"(each once); cannot read {item!r}")
        if name == "streams":
            if not value.isdigit() or int(value) < 1:
                raise RateLimitError("APSARA_RATE_LIMITS: streams is a whole number of open streams, 1 or more")
            found[name] = int(value)
        else:
            try:
                limits.parse(value)
            except ValueError:
                raise RateLimitError(f"APSARA_RATE_LIMITS: {name}={value!r} is not a rate like 120/minute") from None
            found[name] = value
    return found


COUNTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (id TEXT PRIMARY KEY, user TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, started REAL NOT NULL, process TEXT, seen REAL);
CREATE INDEX IF NOT EXISTS streams_by_user ON streams (user);
"""


class TableCounters(Storage):
    """A `limits` storage kept in a table of (key, count, expires): reading a counter is the
    same whatever holds the table; `_row(key)` gives a live counter's (count, expires) or None."""

    def _row(self, key: str):
        raise NotImplementedError

    def get(self, key: str) -> int:
        row = self._row(key)
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return row[1] if row else time.time()


class SqliteCounters(TableCounters):
    """A `limits` storage in an SQLite file: counters every worker process of this machine shares."""

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, database: SqliteDatabase = None,
                 **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.db = database

    @property
    def base_exceptions(self):
        import sqlite3
        return sqlite3.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self.db.write() as sql:
            # A window that has run out starts again from this hit.
            row = sql.execute(
                "INSERT INTO counters VALUES (?,?,?) ON CONFLICT DO UPDATE SET "
                "count = CASE WHEN expires <= ? THEN excluded.count ELSE count + excluded.count END, "
                "expires = CASE WHEN expires <= ? THEN excluded.expires ELSE expires END RETURNING count",
                (key, amount, now + expiry, now, now)).fetchone()
        return row[0]

    def _row(self, key: str):
        with self.db.read() as sql:
            row = sql.execute("SELECT count, expires FROM counters WHERE key=?", (key,)).fetchone()
        return row if row and row[1] > time.time() else None

    def check(self) -> bool:
        with self.db.read() as sql:
            sql.execute("SELECT 1").fetchone()
        return True

    def reset(self) -> int | None:
        with self.db.write() as sql:
            return sql.execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        with self.db.write() as sql:
            sql.execute("DELETE FROM counters WHERE key=?", (key,))


class RateLimits:
    def __init__(self, config: dict, data_dir: Path, storage_uri: str | None = None):
        self.config = config
        self.db = SqliteDatabase(Path(data_dir) / "limits.sqlite3", COUNTER_SCHEMA)
        storage = storage_from_string(storage_uri) if storage_uri else SqliteCounters(database=self.db)
        self.limiter = FixedWindowRateLimiter(storage)
        self.rates = {name: limits.parse(config[name]) for name in RATES if name in config}
        self._upgraded = False

    @property
    def enabled(self) -> bool:
        return bool(self.config)

    def hit(self, name: str, user: str) -> None:
        """Count one `requests` or `uploads` for the user; 429 when over."""
        item = self.rates.get(name)
        if item is None:
            return
        if self.limiter.hit(item, user, name):
            return
        reset = self.limiter.get_window_stats(item, user, name).reset_time
        metrics.rate_limited(name)
        raise ApiError(429, f"rate limit {name}={self.config[name]} reached; try again in a moment",
                       {"limit": [name]}, headers={"Retry-After": str(max(1, math.ceil(reset - time.time())))})

    def open_stream(self, user: str) -> str | None:
        """A slot for one more open stream, or 429; None when streams are not limited."""
        allowed = self.config.get("streams")
        if allowed is None:
            return None
        if not self._upgraded:  # a file of an older version: its own transaction, kept even if this is refused
            with self.db.write() as sql:
                add_holder_columns(sql, "streams")
            self._upgraded = True
        slot, now = new_id("s"), time.time()
        pid, process = this_process()
        with self.db.write() as sql:
            rows = sql.execute("SELECT id, pid, host, started, process, ? - seen FROM streams WHERE user=?",
                               (now, user)).fetchall()
            self.refuse_if_full(allowed, len(still_held(
                rows, now, STALE_STREAM_S, drop=lambda sid: sql.execute("DELETE FROM streams WHERE id=?", (sid,)))))
            sql.execute("INSERT INTO streams (id, user, pid, host, started, process, seen) VALUES (?,?,?,?,?,?,?)",
                        (slot, user, pid, HOST, now, process, now))
        heartbeat.holding(self.refresh_streams)
        return slot

    def refresh_streams(self, pid: int, process: str | None) -> int:
        """Mark this process's open streams as still open (the heartbeat); how many it holds."""
        with self.db.write() as sql:
            return sql.execute("UPDATE streams SET seen=? WHERE host=? AND pid=? AND process IS ?",
                               (time.time(), HOST, pid, process)).rowcount

    @staticmethod
    def refuse_if_full(allowed: int, open_now: int) -> None:
        if open_now >= allowed:
            metrics.rate_limited("streams")
            raise ApiError(429, f"rate limit streams={allowed} reached: {open_now} reply streams are open; "
                                "try again when one ends", {"limit": ["streams"]},
                           headers={"Retry-After": str(STREAM_RETRY_S)})

    def close_stream(self, slot: str | None) -> None:
        if slot is None:
            return
        with self.db.write() as sql:
            sql.execute("DELETE FROM streams WHERE id=?", (slot,))
