"""The PostgreSQL store's figures, next to the file store's, on a throwaway local server.

Prints:
  1. added latency per turn over a direct SDK call (10-turn history), through
     Gunicorn on the file store and on the database, interleaved (target: the
     database's p50 within 3 ms of the files');
  2. the newest 20 of 100,000 conversations on the database (target p50 <= 20 ms);
  3. N concurrent streams over two replicas on one database (target: 0 errors);
  4. `python -m apsara.migrate` on 10,000 conversations (conversations a second);
  5. resume and stop of a reply through the other replica (as bench/chat.py on one folder).
Needs Debian's postgresql package. Run: `.venv/bin/python bench/replicas.py [--streams 200]`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psycopg  # noqa: E402
from google import genai  # noqa: E402
from google.genai import types  # noqa: E402

from apsara.clock import now_iso  # noqa: E402
from apsara.conversations.store import iso_to_ns  # noqa: E402
from apsara.database import Database  # noqa: E402
from bench.chat import (MODEL, burst, direct_contents, pct, post, resume_and_stop_sections, seed,  # noqa: E402
                        start_fake)
from tests.postgres import cluster, empty  # noqa: E402
from tests.servers import gunicorn  # noqa: E402


def run_migration(data: Path, url: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "apsara.migrate", "--data", str(data), "--database", url],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return time.perf_counter() - started


def seed_rows(url: str, owner: str, count: int) -> None:
    """`count` small conversations straight into the table with COPY (seeding, not what is measured)."""
    stamp = now_iso()
    base_ns = iso_to_ns(stamp) - count * 1_000_000_000
    Database(url)  # the schema
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY conversations (owner, id, snapshot, snapshot_seq, generation, seq, record_bytes, "
                      "header, updated_at, updated_ns, message_count) FROM STDIN") as copy:
            for n in range(count):
                header = {"id": f"many{n:06d}", "title": f"Conversation {n}", "created_at": stamp,
                          "updated_at": stamp, "model": MODEL, "system_instruction": "", "tools": [],
                          "settings": {}, "message_count": 0}
                snapshot = orjson.dumps({"conversation": header, "messages": [], "active": {}, "seq": 0})
                copy.write_row((owner, header["id"], snapshot, 0, 1, 0, 0, orjson.dumps(header), stamp,
                                base_ns + n * 1_000_000_000, 0))
        conn.execute("ANALYZE conversations")


def latency_section(files_base: str, db_base: str, fake_url: str, samples: int) -> None:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=fake_url, api_version="v1beta",
                                                                          timeout=60_000))
    contents = direct_contents(10)
    conns = {}
    for name, base in (("files", files_base), ("database", db_base)):
        host, port = base.removeprefix("http://").split(":")
        conns[name] = http.client.HTTPConnection(host, int(port))
    added = {"files": [], "database": []}
    for n in range(samples):  # interleaved: all three see the same machine state
        for name, conn in conns.items():
            start = time.perf_counter()
            client.models.generate_content(model=MODEL, contents=contents)
            direct = time.perf_counter() - start
            start = time.perf_counter()
            response = post(conn, f"/api/v1/conversations/t10-{n}/messages", {"text": "next question"})
            response.read()
            assert response.status == 201, (name, response.status)
            added[name].append((time.perf_counter() - start - direct) * 1000)
    files, database = statistics.median(added["files"]), statistics.median(added["database"])
    print(f"added per 10-turn turn over a direct SDK call (median paired): files {files:.2f} ms, "
          f"database {database:.2f} ms; difference {database - files:+.2f} ms "
          f"(target within 3 ms: {'met' if database - files <= 3 else 'MISSED'})")


def listing_section(db_base: str, count: int, samples: int = 300) -> None:
    host, port = db_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        conn.request("GET", "/api/v1/conversations?limit=20")
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - start) * 1000)
        assert response.status == 200 and len(json.loads(body)["conversations"]) == 20
    p50 = statistics.median(times)
    print(f"newest 20 of {count:,} conversations on the database: p50 {p50:.2f} ms p99 {pct(times, .99):.2f} ms "
          f"(target p50 <= 20 ms: {'met' if p50 <= 20 else 'MISSED'})")


def streams_section(url: str, data: Path, streams: int, seconds: float) -> None:
    chunks = 20
    fake, fake_url = start_fake(chunks=chunks, delay=seconds / (chunks - 1))
    env = {"APSARA_DATA_DIR": str(data / "a"), "APSARA_DATABASE_URL": url, "gemini": "bench",
           "GEMINI_BASE_URL": fake_url, "GUNICORN_ACCESS_LOG": "/dev/null"}
    try:
        with gunicorn(env, workers=2) as first, gunicorn({**env, "APSARA_DATA_DIR": str(data / "b")}, workers=2) as second:
            bases = [first, second]
            for n in range(streams):
                host, port = bases[n % 2].removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port))
                post(conn, "/api/v1/conversations", {"id": f"s{n}"}).read()
            ok, errors, firsts, _, wall = burst(bases, "s", streams, seconds)
            stored = 0
            for n in range(streams):  # read back through the other replica
                host, port = bases[(n + 1) % 2].removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port))
                conn.request("GET", f"/api/v1/conversations/s{n}")
                stored += json.loads(conn.getresponse().read())["messages"][-1].get("status") == "complete"
    finally:
        fake.terminate()
        fake.wait()
    print(f"{streams} concurrent {seconds:.0f}-second streams over two replicas (gevent, 2 workers each): "
          f"{len(ok)} completed, {len(errors)} errors, {stored} stored complete (read through the other replica); "
          f"first delta p50 {statistics.median(firsts) * 1000 if firsts else float('nan'):.0f} ms; wall {wall:.1f} s")
    if errors:
        print("   first errors:", errors[:5])


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--migrate", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; PostgreSQL in a throwaway local cluster; fake Gemini in its own process")
    with cluster() as url, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 4. migration speed (and the seeding of the latency runs' conversations on the database)
        for n in range(args.migrate):
            seed(tmp / "migrate", f"m{n}", 2)
        took = run_migration(tmp / "migrate", url)
        print(f"migrate {args.migrate:,} conversations of 4 messages (copy and check): {took:.1f} s, "
              f"{args.migrate / took:,.0f} conversations/s")
        empty(url)
        for n in range(args.samples):
            seed(tmp / "files", f"t10-{n}", 10)
        run_migration(tmp / "files", url)
        seed_rows(url, "local", args.conversations - args.samples)
        fake, fake_url = start_fake()
        try:
            common = {"gemini": "bench", "GEMINI_BASE_URL": fake_url, "GUNICORN_ACCESS_LOG": "/dev/null"}
            with gunicorn({**common, "APSARA_DATA_DIR": str(tmp / "files")}, workers=2) as files_base, \
                    gunicorn({**common, "APSARA_DATA_DIR": str(tmp / "db"), "APSARA_DATABASE_URL": url},
                             workers=2) as db_base:
                latency_section(files_base, db_base, fake_url, args.samples)
                listing_section(db_base, args.conversations)
        finally:
            fake.terminate()
            fake.wait()
        empty(url)
        streams_section(url, tmp / "streams", args.streams, args.seconds)
        empty(url)
        print("5. resume and stop across two replicas on the database:")
        resume_and_stop_sections(args.samples // 4, database_url=url)


if __name__ == "__main__":
    main()
