"""What the usage ledger adds to a turn's latency.

1. The ledger's own work for one turn, done as a turn does it, in a ledger that
   already holds a year of use by 200 users: with a budget (check and reserve,
   record one Gemini call against the reservation, settle) and without one
   (record only). Alone, and with two processes at it at once, as two Gunicorn
   workers sharing the file are.
2. End to end: turns through the app (the real SDK against the offline fake),
   alternating the real ledger with one that does nothing; the median of the
   paired differences is what the ledger adds to a turn.
Run: `.venv/bin/python bench/usage.py [--turns 2000]`.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apsara import create_app  # noqa: E402
from apsara.gemini.catalog import BUNDLED  # noqa: E402
from apsara.gemini.metering import CallRecord  # noqa: E402
from apsara.testing.fake_gemini import FakeGemini  # noqa: E402
from apsara.usage import Budgets, PriceTable, SqliteLedger, UsageService  # noqa: E402
from tests.conftest import make_settings  # noqa: E402

MODEL = next(m for m in BUNDLED if m.id == "gemini-3.8-flash")
USAGE = {"prompt_tokens": 1200, "output_tokens": 400, "thought_tokens": 150, "total_tokens": 1750}
BUDGET = {"default": {"tokens_per_day": 10**12, "usd_per_month": 10**9}, "users": {}}


def fill(path: Path) -> None:
    """A year of history: 200 users, 3 models, 20 conversations each, a call a day each."""
    ledger = SqliteLedger(path)
    today = date.today()
    with ledger.db.write() as sql:
        for user in range(200):
            for back in range(365):
                day = (today - timedelta(days=back)).isoformat()
                for conversation in range(0, 20, 7):
                    sql.execute("INSERT INTO usage VALUES (?,?,?,?,?,1,100,50,0,0,150,0.0002)",
                                (f"u{user}", day, "gemini-3.8-flash", f"c{conversation}", "reply"))
                sql.execute("INSERT INTO spend VALUES (?,?,150,0.0002)", (f"u{user}", day))


def one_turn(service: UsageService, user: str) -> float:
    started = time.perf_counter()
    bill = service.bill(user, "c1")
    bill.hold([MODEL], 2000, 8192)
    service.record(CallRecord(MODEL.id, "reply", bill, dict(USAGE), True, "ok", 1.0, 0.2))
    bill.settle()
    return time.perf_counter() - started


def turns(path: Path, count: int, budgets: bool, user: str) -> list[float]:
    service = UsageService(SqliteLedger(path), PriceTable.load(), Budgets(BUDGET if budgets else None))
    return [one_turn(service, user) for _ in range(count)]


def _worker(args):
    return turns(*args)


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.5):.3f} ms, p90 {p(0.9):.3f} ms, p99 {p(0.99):.3f} ms ({len(samples)} turns)"


class NoLedger:
    """A ledger that keeps nothing: the baseline for the end-to-end comparison."""

    def record(self, call): pass
    def reserve(self, user, tokens, usd, check): return "r"
    def resize(self, reservation_id, tokens, usd): pass
    def release(self, reservation_id): pass


def end_to_end(pairs: int) -> list[float]:
    fake = FakeGemini().start()
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(make_settings(Path(folder), gemini_api_key="k", gemini_base_url=fake.url,
                                       budgets=BUDGET))
        logging.getLogger("apsara").setLevel(logging.WARNING)  # no request lines on the terminal
        client = app.test_client()
        usage = app.extensions["apsara"].usage
        real = usage.ledger
        differences = []
        for n in range(pairs + 5):
            times = {}
            for name, ledger in (("real", real), ("none", NoLedger()))[:: 1 if n % 2 else -1]:
                usage.ledger = ledger
                client.post("/api/v1/conversations", json={"id": f"{name}{n}"})
                started = time.perf_counter()
                response = client.post(f"/api/v1/conversations/{name}{n}/messages", json={"text": "hello there"})
                times[name] = time.perf_counter() - started
                assert response.status_code == 201, response.json
            if n >= 5:  # the first turns warm caches up
                differences.append(times["real"] - times["none"])
    fake.stop()
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "usage.sqlite3"
        fill(path)
        print(f"ledger of {path.stat().st_size / 1e6:.0f} MB (a year, 200 users)")
        turns(path, 200, True, "u1")  # warm up
        print("one process, with a budget:   ", describe(turns(path, args.turns, True, "u1")))
        print("one process, without a budget:", describe(turns(path, args.turns, False, "u1")))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            both = pool.map(_worker, [(path, args.turns, True, "u1"), (path, args.turns, True, "u2")])
        print("two processes at once, budget:", describe(both[0] + both[1]))
    differences = end_to_end(args.pairs)
    print(f"end to end, a turn with the ledger minus without: median {statistics.median(differences) * 1000:.3f} ms "
          f"over {len(differences)} paired turns")


if __name__ == "__main__":
    main()
