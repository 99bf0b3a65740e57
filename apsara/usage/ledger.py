"""The usage ledger: who spent which tokens on which model, and what it cost.

Every Gemini call that answered is one `CallUsage`, added to per-day sums by
user, model, conversation and purpose (`reply`, `judge`, `title`, `image`...).
Budget reservations of running turns live beside it, so one transaction can
check "settled plus reserved" against a limit and reserve, whichever worker
asks. `UsageLedger` is the interface the rest of the service uses; `SqliteLedger`
is the embedded implementation (a PostgreSQL one can stand in for replicas).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from ..clock import new_id
from ..holders import HOST, add_holder_columns, heartbeat, still_held, this_process
from .database import SqliteDatabase

TOKEN_FIELDS = ("prompt_tokens", "output_tokens", "thought_tokens", "cached_tokens", "total_tokens")
GROUPS = ("day", "model", "conversation", "user")  # also the only column names a report may group on
# A reservation older than this is a turn that can no longer be running (its writer
# hung): it stops holding budget. The outer bound: a reservation of a process that
# died, here or on another machine, is freed long before (see holders.py).
STALE_RESERVATION_S = 3600.0


@dataclass
class CallUsage:
    """One Gemini call as billed: Gemini's last reported usage for it, and its cost."""

    user: str
    model: str
    usage: dict
    cost_usd: float
    purpose: str = "reply"
    conversation_id: str | None = None
    reservation_id: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class Spending:
    """Tokens and USD of one user in the current UTC day and month: settled plus reserved."""

    day_tokens: int = 0
    day_usd: float = 0.0
    month_tokens: int = 0
    month_usd: float = 0.0
    settled: dict = field(default_factory=dict)  # the same four without reservations
    running: int = 0  # reservations of turns still running


class UsageLedger(Protocol):
    def record(self, call: CallUsage) -> None: ...

    def report(self, user: str | None, first: date, last: date, group_by: str | None) -> tuple[dict, list[dict]]: ...

    def reserve(self, user: str, tokens: int, usd: float, check: Callable[[Spending], None]) -> str: ...

    def resize(self, reservation_id: str, tokens: int, usd: float) -> None: ...

    def release(self, reservation_id: str) -> None: ...


def utc_day(epoch_s: float) -> date:
    return datetime.fromtimestamp(epoch_s, timezone.utc).date()


SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    user TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, conversation TEXT NOT NULL,
    purpose TEXT NOT NULL, calls INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, thought_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    PRIMARY KEY (user, day, model, conversation, purpose)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_day ON usage (day);
-- Per user and day only: what a budget check sums (at most 31 rows a month).
CREATE TABLE IF NOT EXISTS spend (
    user TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    PRIMARY KEY (user, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    pid INTEGER NOT NULL, host TEXT NOT NULL, started REAL NOT NULL, process TEXT, seen REAL);
CREATE INDEX IF NOT EXISTS reservations_by_user ON reservations (user);
"""

# '' stands for "no conversation" in the key; the API shows it as null.
NO_CONVERSATION = ""


class SqliteLedger:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.db = SqliteDatabase(path, SCHEMA)
        self.clock = clock
        self._upgraded = False

    def _upgrade(self) -> None:
        """A file of an older version: its reservations gain the columns they lack, in a
        transaction of its own (kept even if the turn that asked is then refused)."""
        if not self._upgraded:
            with self.db.write() as sql:
                add_holder_columns(sql, "reservations")
            self._upgraded = True

    # -- recording ------------------------------------------------------------------
    def record(self, call: CallUsage) -> None:
        u = call.usage
        tokens = [int(u.get(name) or 0) for name in TOKEN_FIELDS]
        day = utc_day(call.at).isoformat()
        with self.db.write() as sql:
            sql.execute(
                "INSERT INTO usage VALUES (?,?,?,?,?,1,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
                "calls=calls+1, prompt_tokens=prompt_tokens+excluded.prompt_tokens, "
                "output_tokens=output_tokens+excluded.output_tokens, "
                "thought_tokens=thought_tokens+excluded.thought_tokens, "
                "cached_tokens=cached_tokens+excluded.cached_tokens, "
                "total_tokens=total_tokens+excluded.total_tokens, cost_usd=cost_usd+excluded.cost_usd",
                (call.user, day, call.model, call.conversation_id or NO_CONVERSATION, call.purpose,
                 *tokens, call.cost_usd))
            sql.execute("INSERT INTO spend VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET "
                        "tokens=tokens+excluded.tokens, cost_usd=cost_usd+excluded.cost_usd",
                        (call.user, day, tokens[-1], call.cost_usd))
            if call.reservation_id:
                # Settled now: the reservation keeps holding only what is not spent yet.
                sql.execute("UPDATE reservations SET tokens=max(0, tokens-?), cost_usd=max(0, cost_usd-?) "
                            "WHERE id=?", (tokens[-1], call.cost_usd, call.reservation_id))

    # -- reading --------------------------------------------------------------------
    def report(self, user: str | None, first: date, last: date,
               group_by: str | None = None) -> tuple[dict, list[dict]]:
        """(totals, groups) for `user` (None: everyone) between two UTC days, both included."""
        sums = ("sum(calls), sum(prompt_tokens), sum(output_tokens), sum(thought_tokens), "
                "sum(cached_tokens), sum(total_tokens), sum(cost_usd)")
        where, args = "day BETWEEN ? AND ?", [first.isoformat(), last.isoformat()]
        if user is not None:
            where += " AND user = ?"
            args.append(user)
        with self.db.read() as sql:
            totals = _row(sql.execute(f"SELECT {sums} FROM usage WHERE {where}", args).fetchone())
            groups = []
            if group_by:
                if group_by not in GROUPS:
                    raise ValueError(f"cannot group usage by {group_by!r}")
                # Everyone's conversations: ids are per user, so a group is (user, conversation).
                keys = {"conversation": "conversation" if user is not None else "conversation, user"}
                key = keys.get(group_by, group_by)
                width = key.count(",") + 1
                rows = sql.execute(f"SELECT {key}, {sums} FROM usage WHERE {where} GROUP BY {key} ORDER BY {key}",
                                   args).fetchall()
                groups = report_groups(rows, group_by, width)
        return totals, groups

    # -- budgets ----------------------------------------------------------------------
    def _spending(self, sql, user: str, now: float) -> Spending:
        month_start = utc_day(now).replace(day=1).isoformat()
        spent = sql.execute("SELECT day, tokens, cost_usd FROM spend WHERE user=? AND day>=?",
                            (user, month_start)).fetchall()
        # `seen` is real time (the heartbeat's), whatever clock the ledger is given.
        reservations = sql.execute("SELECT id, tokens, cost_usd, pid, host, started, process, ? - seen "
                                   "FROM reservations WHERE user=?", (time.time(), user)).fetchall()
        return spending_of(spent, reservations, now,
                           drop=lambda rid: sql.execute("DELETE FROM reservations WHERE id=?", (rid,)))

    def spending(self, user: str) -> Spending:
        self._upgrade()
        with self.db.write() as sql:  # it may clear stale reservations
            return self._spending(sql, user, self.clock())

    def reserve(self, user: str, tokens: int, usd: float, check: Callable[[Spending], None]) -> str:
        """Check the user's spending and reserve, atomically across workers.

        `check(spending)` raises to refuse; nothing is reserved then.
        """
        self._upgrade()
        now = self.clock()
        reservation_id = new_id("r")
        pid, process = this_process()
        with self.db.write() as sql:
            check(self._spending(sql, user, now))
            sql.execute("INSERT INTO reservations (id, user, tokens, cost_usd, pid, host, started, process, seen) "
                        "VALUES (?,?,?,?,?,?,?,?,?)",
                        (reservation_id, user, int(tokens), float(usd), pid, HOST, now, process, time.time()))
        heartbeat.holding(self.refresh_reservations)
        return reservation_id

    def refresh_reservations(self, pid: int, process: str | None) -> int:
        """Mark this process's reservations as still held (the heartbeat); how many it holds."""
        with self.db.write() as sql:
            return sql.execute("UPDATE reservations SET seen=? WHERE host=? AND pid=? AND process IS ?",
                               (time.time(), HOST, pid, process)).rowcount

    def resize(self, reservation_id: str, tokens: int, usd: float) -> None:
        with self.db.write() as sql:
            sql.execute("UPDATE reservations SET tokens=?, cost_usd=? WHERE id=?",
                        (int(tokens), float(usd), reservation_id))

    def release(self, reservation_id: str) -> None:
        with self.db.write() as sql:
            sql.execute("DELETE FROM reservations WHERE id=?", (reservation_id,))


def _row(values) -> dict:
    calls, *tokens, cost = values
    return {"calls": calls or 0, **{name: value or 0 for name, value in zip(TOKEN_FIELDS, tokens)},
            "cost_usd": round(cost or 0.0, 6)}
def report_groups(rows, group_by: str, width: int) -> list[dict]:
    """A report's groups from rows of (`width` key columns, then the sums)."""
    groups = []
    for row in rows:
        group = {"key": row[0]}
        if group_by == "conversation":
            group["key"] = row[0] or None  # null: calls outside a conversation
            if width == 2:
                group["user"] = row[1]  # everyone's conversations: ids are per user
        groups.append({**group, **_row(row[width:])})
    return groups


def spending_of(spent, reservations, now: float, drop: Callable[[str], None]) -> Spending:
    """A user's spending from their (day, tokens, usd) rows of this month and their
    reservations (id, tokens, usd, pid, host, started, process, seconds since seen); `drop(id)` removes one
    whose turn can no longer be running."""
    today = utc_day(now).isoformat()
    day_tokens = day_usd = month_tokens = month_usd = 0
    for day, tokens, usd in spent:
        month_tokens += tokens
        month_usd += usd
        if day == today:
            day_tokens += tokens
            day_usd += usd
    settled = {"day_tokens": day_tokens, "day_usd": day_usd, "month_tokens": month_tokens, "month_usd": month_usd}
    held = still_held(reservations, now, STALE_RESERVATION_S, drop)
    reserved_tokens, reserved_usd, running = sum(r[1] for r in held), sum((r[2] for r in held), 0.0), len(held)
    return Spending(day_tokens + reserved_tokens, day_usd + reserved_usd,
                    month_tokens + reserved_tokens, month_usd + reserved_usd, settled, running)


