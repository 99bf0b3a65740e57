"""Upload a 200 MB file through Gunicorn: throughput and the worker's peak memory.

The client streams the multipart body from disk (it never holds the file
either); the figure that matters is how much the worker's peak RSS (VmHWM)
grows over its resting RSS. Target: under 50 MB.
With `--database` the server keeps files in a throwaway PostgreSQL server (the
bytes copied into chunk rows), and the bytes are downloaded back too.
Run: `.venv/bin/python bench/upload.py [--mb 200] [--database]`.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres import cluster  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

BOUNDARY = "apsara-bench-boundary"


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker_pid(master_port: int) -> int:
    out = subprocess.run(["pgrep", "-f", "gunicorn wsgi:app"], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in out]
    # the worker is the one whose parent is another of these pids
    for pid in pids:
        parent = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
        if parent in pids:
            return pid
    raise RuntimeError("no gunicorn worker found")


def make_file(path: Path, megabytes: int) -> None:
    header = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        fh.write(header)
        for _ in range(megabytes):
            fh.write(block)


def stream_upload(host: str, port: int, path: Path) -> tuple[int, dict, float]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    size = len(head) + path.stat().st_size + len(tail)
    conn = http.client.HTTPConnection(host, port, timeout=600)
    start = time.perf_counter()
    conn.putrequest("POST", "/api/v1/files")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(head)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            conn.send(chunk)
    conn.send(tail)
    response = conn.getresponse()
    body = json.loads(response.read())
    return response.status, body, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--database", action="store_true", help="files in PostgreSQL (a throwaway local server)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(cluster()) if args.database else None
        run(args.mb, url)


def download(host: str, port: int, file_id: str) -> tuple[int, float]:
    conn = http.client.HTTPConnection(host, port, timeout=600)
    start = time.perf_counter()
    conn.request("GET", f"/api/v1/files/{file_id}/content")
    response = conn.getresponse()
    size = 0
    while chunk := response.read(1024 * 1024):
        size += len(chunk)
    return size, time.perf_counter() - start


def run(megabytes: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "clip.mp4"
        make_file(source, megabytes)
        env = {"APSARA_DATA_DIR": str(Path(tmp) / "data"), "APSARA_MAX_UPLOAD_MB": str(megabytes + 10),
               "GUNICORN_ACCESS_LOG": "/dev/null", **({"APSARA_DATABASE_URL": database_url} if database_url else {})}
        with gunicorn(env, workers=1) as base:
            host, port = base.removeprefix("http://").split(":")
            pid = worker_pid(int(port))
            # one small upload first, so imports and pools are warm
            stream_upload(host, int(port), Path(__file__))
            resting = memory_kb(pid, "VmRSS")
            status, body, seconds = stream_upload(host, int(port), source)
            peak = memory_kb(pid, "VmHWM")
            assert status == 201, body
            size, download_s = download(host, int(port), body["id"])
            download_peak = memory_kb(pid, "VmHWM")
        assert size == body["size_bytes"]
        print(f"store: {'PostgreSQL (chunk rows)' if database_url else 'files'}")
        size_mb = source.stat().st_size / 1024 / 1024
        print(f"upload of {size_mb:.0f} MB ({body['mime_type']}): {seconds:.2f} s, {size_mb / seconds:.0f} MB/s")
        print(f"worker RSS at rest {resting / 1024:.1f} MB, peak {peak / 1024:.1f} MB: "
              f"grew {(peak - resting) / 1024:.1f} MB (target < 50 MB: "
              f"{'met' if (peak - resting) / 1024 < 50 else 'MISSED'})")
        print(f"download: {download_s:.2f} s, {size / 1024 / 1024 / download_s:.0f} MB/s; worker peak after it "
              f"{download_peak / 1024:.1f} MB (grew {(download_peak - resting) / 1024:.1f} MB over rest)")


if __name__ == "__main__":
    main()
