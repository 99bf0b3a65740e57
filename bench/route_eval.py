"""Evaluate the `auto` router on the labeled set in bench/routing/eval.jsonl.

The set was written for this project and is never used to fit the weights
(those come from apsara/routing/data/train.jsonl). Prints tier accuracy, the
confusion matrix, the share of turns sent to pro against the labeled share,
and routing latency p50/p99 (features + classifier + constraints).
Run: `.venv/bin/python bench/route_eval.py`.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apsara.gemini.catalog import ModelCatalog  # noqa: E402
from apsara.routing.router import Router  # noqa: E402

TIERS = ["lite", "flash", "pro", "image"]


def main() -> None:
    rows = [json.loads(line) for line in (ROOT / "bench/routing/eval.jsonl").read_text().splitlines() if line]
    router = Router(ModelCatalog(None))  # the bundled model table: no network
    confusion: Counter = Counter()
    latencies = []
    for _ in range(3):  # three passes for stable latency figures; accuracy from the first
        for row in rows:
            files = ["image/png"] if row.get("image") else []
            routing = router.route(row["text"], file_types=files, previous_tier=row.get("previous"),
                                   history_turns=2 if row.get("previous") else 0)
            latencies.append(routing.latency_ms)
            if len(latencies) <= len(rows):
                confusion[(row["tier"], routing.tier)] += 1
    right = sum(n for (label, got), n in confusion.items() if label == got)
    print(f"{len(rows)} labeled prompts; tier accuracy {right / len(rows):.1%} (target >= 85%)")
    print("confusion (rows: labeled, columns: routed)")
    print("        " + "".join(f"{t:>7}" for t in TIERS))
    for label in TIERS:
        print(f"{label:>7} " + "".join(f"{confusion[(label, got)]:>7}" for got in TIERS))
    labeled_pro = sum(1 for r in rows if r["tier"] == "pro") / len(rows)
    routed_pro = sum(n for (_, got), n in confusion.items() if got == "pro") / len(rows)
    print(f"share sent to pro: {routed_pro:.1%} (labeled share {labeled_pro:.1%})")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"routing latency p50 {statistics.median(latencies):.3f} ms, p99 {p99:.3f} ms (target p99 < 2 ms)")


if __name__ == "__main__":
    main()
