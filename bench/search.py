"""Search figures: 10,000 conversations of 20 messages, one-word queries through the HTTP API.

Seeds the files straight to disk, builds the index from them in bulk (as
`python -m apsara.search --rebuild` does; its time is printed), then asks
`GET /api/v1/conversations?q=WORD` through the Flask test client for words of
three kinds: common (in most conversations), middling and rare. Prints p50 and
p95 per kind, and the same for adding one turn's texts to the index.
Run: `.venv/bin/python bench/search.py [--conversations N] [--messages M]`.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apsara import create_app  # noqa: E402
from apsara.config import Settings  # noqa: E402
from apsara.conversations.file_format import encode  # noqa: E402
from apsara.conversations.store import ConversationStore, iso_to_ns  # noqa: E402

VOCABULARY = 20_000  # words w0..w19999, drawn with a Zipf-like law as natural text is


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seed(data_dir: Path, owner: str, conversations: int, messages: int, rng: random.Random) -> None:
    folder = data_dir / "history" / owner
    folder.mkdir(parents=True, exist_ok=True)
    cumulative, total = [], 0.0
    for rank in range(VOCABULARY):
        total += 1 / (rank + 1)
        cumulative.append(total)
    words = [f"w{rank}" for rank in range(VOCABULARY)]
    start = datetime.now(timezone.utc) - timedelta(days=30)
    for n in range(conversations):
        created = start + timedelta(seconds=n * 60)
        items, parent, active = [], None, {}
        for k in range(messages):
            text = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(8, 60)))
            message = {"id": f"m{n}-{k}", "role": "user" if k % 2 == 0 else "model", "parent_id": parent,
                       "created_at": _stamp(created + timedelta(seconds=k)), "parts": [{"type": "text", "text": text}]}
            if k % 2:
                message.update(status="complete", model="gemini-3.8-flash")
            items.append(message)
            active[parent or ""] = message["id"]
            parent = message["id"]
        updated = items[-1]["created_at"]
        header = {"id": f"c{n:05d}", "title": f"Conversation {n} about w{rng.randint(0, 5000)}",
                  "title_source": "user", "created_at": _stamp(created), "updated_at": updated,
                  "model": "gemini-3.8-flash", "system_instruction": "", "tools": [], "settings": {},
                  "message_count": messages, "archived": False, "pinned": False, "temporary": False}
        path = folder / f"c{n:05d}.json"
        path.write_bytes(encode({"conversation": header, "messages": items, "active": active}))
        os.utime(path, ns=(iso_to_ns(updated), iso_to_ns(updated)))


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        started = time.perf_counter()
        seed(data_dir, "local", args.conversations, args.messages, rng)
        print(f"seeded {args.conversations:,} conversations of {args.messages} messages "
              f"in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        count = ConversationStore(data_dir).rebuild_search_index()
        size = sum(p.stat().st_size for p in (data_dir / "search").iterdir())
        print(f"index built from the files: {count:,} conversations in {time.perf_counter() - started:.1f} s, "
              f"{size / 1e6:.0f} MB")
        app = create_app(Settings(data_dir=data_dir, temporary_sweep_s=0, auto_titles=False))
        client = app.test_client()
        started = time.perf_counter()
        create_app(Settings(data_dir=data_dir, temporary_sweep_s=0, auto_titles=False))
        print(f"start-up check of the index against the files: {1000 * (time.perf_counter() - started):.0f} ms")
        kinds = {"common (w1..w10)": range(1, 11), "middling (w200..w2000)": range(200, 2001),
                 "rare (w15000..w19999)": range(15_000, 20_000)}
        for kind, ranks in kinds.items():
            samples, hits = [], 0
            for _ in range(args.queries):
                word = f"w{rng.choice(ranks)}"
                t0 = time.perf_counter()
                response = client.get(f"/api/v1/conversations?q={word}&limit=20")
                samples.append(1000 * (time.perf_counter() - t0))
                assert response.status_code == 200, response.json
                hits += len(response.json["conversations"])
            print(f"one-word query, {kind:24s} {percentiles(samples)}   ({hits / args.queries:.1f} hits a page)")
        samples = []
        store = app.extensions["apsara"].store
        for n in range(args.queries):
            header = store.read_header("local", f"c{n:05d}")
            t0 = time.perf_counter()
            store.search_index.update("local", header["id"], header["updated_at"], iso_to_ns(header["updated_at"]),
                                      ["a new question with w5 and w77", "its answer, w12 w900 w15001"])
            samples.append(1000 * (time.perf_counter() - t0))
        print(f"index a turn's two texts (in the write path)  {percentiles(samples)}")


if __name__ == "__main__":
    main()
