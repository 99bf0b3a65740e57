"""What fsyncing an upload's bytes costs the upload, and what running it beside the hashing saves.

Stores freshly written files (the page cache full of dirty bytes, as after an upload
arrives) with FileStore.adopt three ways: without an fsync of the bytes, with one
after the hashing, and with one beside the hashing on a disk thread (what adopt does).
Prints the median time of each, per size.
Run: `.venv/bin/python bench/upload_fsync.py [--mb 1 20 100] [--rounds 5]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apsara.files as files_module  # noqa: E402
from apsara.files import FileStore, examine, fsync_file  # noqa: E402

MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def no_fsync(temp_path, filename):
    return [examine(temp_path, filename), None]


def fsync_after(temp_path, filename):
    meta = examine(temp_path, filename)
    fsync_file(temp_path)
    return [meta, None]


WAYS = {"no fsync of the bytes": no_fsync, "fsync after hashing": fsync_after, "fsync beside hashing": None}


def one(store: FileStore, megabytes: int, way) -> float:
    with store.incoming_file() as fh:
        fh.write(MP4_HEADER)
        block = os.urandom(1024 * 1024)
        for _ in range(megabytes):
            fh.write(block)
        path = Path(fh.name)
    real = files_module.on_disk_threads
    if way is not None:  # stands in for the two works adopt runs side by side
        files_module.on_disk_threads = lambda works: way(path, "clip.mp4")
    try:
        start = time.perf_counter()
        store.adopt("bench", path, "clip.mp4")
        return time.perf_counter() - start
    finally:
        files_module.on_disk_threads = real


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        store = FileStore(Path(tmp), "bench")
        for megabytes in args.mb:
            for name, way in WAYS.items():
                times = [one(store, megabytes, way) for _ in range(args.rounds)]
                print(f"{megabytes:>4} MB, {name:<22}: median {statistics.median(times) * 1000:8.1f} ms "
                      f"(best {min(times) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
