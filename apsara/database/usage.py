"""The usage ledger and budget reservations in PostgreSQL: the same sums every replica sees.

The same interface as the SQLite ledger, and the same arithmetic (`spending_of` and
`report_groups` in usage/ledger.py): per-day sums by user, model, conversation and
purpose; per-user daily spend for budget checks; reservations of running turns. A reservation is checked and made
under a transaction-level advisory lock per user, so two replicas never both
admit the turn that crosses a limit. A reservation's `seen` is the database's clock.
"""
from __future__ import annotations

import time
from datetime import date
from typing import Callable

from ..clock import new_id
from ..holders import DB_NOW, HOST, heartbeat, this_process
from ..usage.ledger import (GROUPS, NO_CONVERSATION, TOKEN_FIELDS, CallUsage, Spending, _row,
                            report_groups, spending_of, utc_day)
from . import Database

# The report's group names -> columns ("user" is a reserved word in PostgreSQL).
_COLUMNS = {"day": "day", "model": "model", "conversation": "conversation", "user": "owner"}


class PgLedger:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock

    def record(self, call: CallUsage) -> None:
        u = call.usage
        tokens = [int(u.get(name) or 0) for name in TOKEN_FIELDS]
        day = utc_day(call.at).isoformat()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO usage VALUES (%s,%s,%s,%s,%s,1,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (owner, day, model, conversation, purpose) DO UPDATE SET "
                "calls = usage.calls + 1, prompt_tokens = usage.prompt_tokens + EXCLUDED.prompt_tokens, "
                "output_tokens = usage.output_tokens + EXCLUDED.output_tokens, "
                "thought_tokens = usage.thought_tokens + EXCLUDED.thought_tokens, "
                "cached_tokens = usage.cached_tokens + EXCLUDED.cached_tokens, "
                "total_tokens = usage.total_tokens + EXCLUDED.total_tokens, "
                "cost_usd = usage.cost_usd + EXCLUDED.cost_usd",
                (call.user, day, call.model, call.conversation_id or NO_CONVERSATION, call.purpose,
                 *tokens, call.cost_usd))
            conn.execute("INSERT INTO spend VALUES (%s,%s,%s,%s) ON CONFLICT (owner, day) DO UPDATE SET "
                         "tokens = spend.tokens + EXCLUDED.tokens, cost_usd = spend.cost_usd + EXCLUDED.cost_usd",
                         (call.user, day, tokens[-1], call.cost_usd))
            if call.reservation_id:
                # Settled now: the reservation keeps holding only what is not spent yet.
                conn.execute("UPDATE reservations SET tokens = GREATEST(0, tokens - %s), "
                             "cost_usd = GREATEST(0, cost_usd - %s) WHERE id = %s",
                             (tokens[-1], call.cost_usd, call.reservation_id))

    def report(self, user: str | None, first: date, last: date,
               group_by: str | None = None) -> tuple[dict, list[dict]]:
        # sum() of bigint is numeric (a Decimal): back to whole numbers.
        sums = ("sum(calls)::bigint, sum(prompt_tokens)::bigint, sum(output_tokens)::bigint, "
                "sum(thought_tokens)::bigint, sum(cached_tokens)::bigint, sum(total_tokens)::bigint, sum(cost_usd)")
        where, args = "day BETWEEN %s AND %s", [first.isoformat(), last.isoformat()]
        if user is not None:
            where += " AND owner = %s"
            args.append(user)
        with self.db.connection() as conn:
            totals = _row(conn.execute(f"SELECT {sums} FROM usage WHERE {where}", args).fetchone())
            groups = []
            if group_by:
                if group_by not in GROUPS:
                    raise ValueError(f"cannot group usage by {group_by!r}")
                key = _COLUMNS[group_by]
                if group_by == "conversation" and user is None:
                    key = "conversation, owner"  # ids are per user
                width = key.count(",") + 1
                rows = conn.execute(f"SELECT {key}, {sums} FROM usage WHERE {where} GROUP BY {key} ORDER BY {key}",
                                    args).fetchall()
                groups = report_groups(rows, group_by, width)
        return totals, groups

    def _spending(self, conn, user: str, now: float) -> Spending:
        month_start = utc_day(now).replace(day=1).isoformat()
        spent = conn.execute("SELECT day, tokens, cost_usd FROM spend WHERE owner = %s AND day >= %s",
                             (user, month_start)).fetchall()
        reservations = conn.execute(f"SELECT id, tokens, cost_usd, pid, host, started, process, {DB_NOW} - seen "
                                    "FROM reservations WHERE owner = %s", (user,)).fetchall()
        return spending_of(spent, reservations, now,
                           drop=lambda rid: conn.execute("DELETE FROM reservations WHERE id = %s", (rid,)))

    def _user_locked(self, conn, user: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("budget/" + user,))

    def spending(self, user: str) -> Spending:
        with self.db.transaction() as conn:
            self._user_locked(conn, user)
            return self._spending(conn, user, self.clock())

    def reserve(self, user: str, tokens: int, usd: float, check: Callable[[Spending], None]) -> str:
        """Check the user's spending and reserve, atomically across replicas."""
        now = self.clock()
        reservation_id = new_id("r")
        pid, process = this_process()
        with self.db.transaction() as conn:
            self._user_locked(conn, user)
            check(self._spending(conn, user, now))
            conn.execute("INSERT INTO reservations (id, owner, tokens, cost_usd, pid, host, started, process, seen) "
                         f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,{DB_NOW})",
                         (reservation_id, user, int(tokens), float(usd), pid, HOST, now, process))
        heartbeat.holding(self.refresh_reservations)
        return reservation_id

    def refresh_reservations(self, pid: int, process: str | None) -> int:
        with self.db.connection() as conn:
            return conn.execute(f"UPDATE reservations SET seen = {DB_NOW} WHERE host = %s AND pid = %s "
                                "AND process IS NOT DISTINCT FROM %s::text", (HOST, pid, process)).rowcount

    def resize(self, reservation_id: str, tokens: int, usd: float) -> None:
        with self.db.connection() as conn:
            conn.execute("UPDATE reservations SET tokens = %s, cost_usd = %s WHERE id = %s",
                         (int(tokens), float(usd), reservation_id))

    def release(self, reservation_id: str) -> None:
        with self.db.connection() as conn:
            conn.execute("DELETE FROM reservations WHERE id = %s", (reservation_id,))
