"""Conversation API figures through real Gunicorn on this machine.

Prints p50/p99 for create, get and list; the newest-20 listing among 10,000
conversations; and getting one conversation of 1,000 messages.
Run: `make bench` (or `.venv/bin/python bench/conversations.py`).
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apsara.clock import now_iso  # noqa: E402
from apsara.conversations.file_format import encode  # noqa: E402
from apsara.conversations.store import iso_to_ns  # noqa: E402
from tests.servers import gunicorn  # noqa: E402


def seed_many(data_dir: Path, owner: str, count: int) -> None:
    """Write `count` small conversation files straight to disk (fast seeding, no fsync)."""
    folder = data_dir / "history" / owner
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n in range(count):
        stamp = (start + timedelta(seconds=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        header = {"id": f"c{n:05d}", "title": f"Conversation {n}", "created_at": stamp, "updated_at": stamp,
                  "model": "gemini-3.8-flash", "system_instruction": "", "tools": [], "settings": {},
                  "message_count": 0}
        path = folder / f"c{n:05d}.json"
        path.write_bytes(encode({"conversation": header, "messages": [], "active": {}}))
        os.utime(path, ns=(iso_to_ns(stamp), iso_to_ns(stamp)))


def seed_long(data_dir: Path, owner: str, conversation_id: str, messages: int) -> None:
    folder = data_dir / "history" / owner
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now_iso()
    tree, active, parent = [], {}, None
    for n in range(messages):
        role = "user" if n % 2 == 0 else "model"
        message = {"id": f"m{n}", "role": role, "parent_id": parent, "created_at": stamp,
                   "parts": [{"type": "text", "text": ("word " * 60).strip()}]}
        if role == "model":
            message.update(model="gemini-3.8-flash", status="complete", finish_reason="STOP",
                           usage={"prompt_tokens": 10, "output_tokens": 60, "thought_tokens": 0,
                                  "total_tokens": 70})
        tree.append(message)
        active[parent or ""] = message["id"]
        parent = message["id"]
    header = {"id": conversation_id, "title": "long", "created_at": stamp, "updated_at": stamp,
              "model": "gemini-3.8-flash", "system_instruction": "", "tools": [], "settings": {},
              "message_count": messages}
    path = folder / f"{conversation_id}.json"
    path.write_bytes(encode({"conversation": header, "messages": tree, "active": active}))
    os.utime(path, ns=(iso_to_ns(stamp), iso_to_ns(stamp)))


def timed(connection, method, path, body=None, expect=200):
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload else {}
    start = time.perf_counter()
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status == expect, (response.status, data[:200])
    return elapsed, data


def report(name, samples, target=None):
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    goal = f"   target p50 <= {target} ms: {'met' if p50 <= target else 'MISSED'}" if target else ""
    print(f"{name:<42} n={len(samples):<5} p50={p50:7.2f} ms  p99={p99:7.2f} ms{goal}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        seed_many(data, "local", 10_000)
        seed_long(data, "local", "long-1000", 1000)
        with gunicorn({"APSARA_DATA_DIR": str(data), "GUNICORN_ACCESS_LOG": "/dev/null"}, workers=2) as base:
            host, port = base.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port))
            for _ in range(20):  # warm both workers
                timed(connection, "GET", "/api/v1/conversations?limit=20")
            creates = [timed(connection, "POST", "/api/v1/conversations", {"title": f"t{n}"}, 201)[0]
                       for n in range(300)]
            _, body = timed(connection, "POST", "/api/v1/conversations", {"id": "probe"}, 201)
            gets = [timed(connection, "GET", "/api/v1/conversations/probe")[0] for _ in range(300)]
            lists = [timed(connection, "GET", "/api/v1/conversations?limit=20")[0] for _ in range(300)]
            longs = [timed(connection, "GET", "/api/v1/conversations/long-1000")[0] for _ in range(200)]
            _, raw = timed(connection, "GET", "/api/v1/conversations/long-1000")
            assert len(json.loads(raw)["messages"]) == 1000
            print(f"Gunicorn, 2 workers, {os.cpu_count()} cores; 10,301 conversations on disk")
            report("create", creates)
            report("get (empty conversation)", gets)
            report("list newest 20 of 10,301", lists, target=50)
            report("get conversation of 1,000 messages", longs, target=20)


if __name__ == "__main__":
    main()
