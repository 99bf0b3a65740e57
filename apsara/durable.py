"""Writing a file so that a crash leaves the old bytes or the new ones, never half.

Temp file in the same folder, flush, fsync, optional mtime, `os.replace`, fsync
of the folder. Readers need no lock: a rename is atomic.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .metrics import timed_store_write

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, data: bytes, mtime_ns: int | None = None) -> None:
    with timed_store_write():
        _write_atomically(target, data, mtime_ns)


def _write_atomically(target: Path, data: bytes, mtime_ns: int | None) -> None:
    folder = target.parent
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=target.suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mtime_ns is not None:
            os.utime(temp_name, ns=(mtime_ns, mtime_ns))
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_dir(folder)


def on_disk_threads(works: list[Callable[[], object]], meanwhile: Callable[[], None] | None = None) -> list:
    """Each of `works` (the disk's part of a change: an fsync, an index write) on a thread
    of its own, all at once, after `meanwhile()` has run here; returns their results once
    all are done. The works run even when `meanwhile` raises, and all are waited for even
    when one raises (then the first error is raised).

    `meanwhile` starts a reply's Gemini call, and the works make its user message durable
    as Gemini answers. Under gevent a new greenlet runs until it first waits, so
    `meanwhile()` returns once the call is on the wire, after the SDK has built the
    request (~60 ms of CPU at 1,000 messages). Started before, the works contended with
    that build for the interpreter's lock and made it ~4 ms slower at 500 turns; started
    now, they run while the worker waits for Gemini, which takes longer than they do.
    On threads, the works' SQLite calls (which never yield) do not hold the gevent hub;
    only a greenlet that needs the index at that moment waits for them."""
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        waits = [_disk_threads()(work) for work in works]
        outcomes = []
        for wait in waits:  # every one, also past one that failed: none may outlive the caller's lock
            try:
                outcomes.append((wait(), None))
            except Exception as exc:  # noqa: BLE001 - raised below, once all are done
                outcomes.append((None, exc))
    for _, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _ in outcomes]


def native(module: str, name: str):
    """`module.name` as the standard library made it, also where gevent has patched it."""
    try:
        from gevent import monkey
    except ImportError:
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)


def native_lock(reentrant: bool = False):
    """A lock of the OS's threads, also under gevent: for what the disk's threads share with
    greenlets. gevent's own locks, taken by a greenlet and by a native thread at once, lost a
    wake-up under a burst of turns and left every disk thread waiting. Hold one only for work
    that never yields to gevent (SQLite calls): a greenlet waiting on it stops the worker."""
    return native("_thread", "RLock" if reentrant else "allocate_lock")()


_pool: tuple[int, Callable] | None = None
DISK_THREADS = 8


def _disk_threads() -> Callable[[Callable[[], object]], Callable[[], object]]:
    """`start(work)` -> `wait()` on the disk's threads: under gevent a threadpool of its own
    (the hub's also resolves host names, which must not wait behind fsyncs and index
    writes), else an executor. One per process: a forked child would queue work for its
    parent's threads, which it does not have. Two threads making one at once leave an
    idle spare, no harm."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        if _gevent_patched():
            from gevent.threadpool import ThreadPool

            threads = ThreadPool(DISK_THREADS)
            start = lambda work: _raised(threads.spawn(_caught, work).get)  # noqa: E731
        else:
            executor = ThreadPoolExecutor(max_workers=DISK_THREADS, thread_name_prefix="apsara-disk")
            start = lambda work: executor.submit(work).result  # noqa: E731
        _pool = (os.getpid(), start)
    return _pool[1]


def _caught(work: Callable[[], object]) -> tuple[object, BaseException | None]:
    """`work()`, what it raises returned instead: gevent's pool prints the traceback of a task
    that raises (every upload refused with 415 wrote one to the log), though its caller
    handles the error."""
    try:
        return work(), None
    except BaseException as exc:  # noqa: BLE001 - raised again by the caller's wait
        return None, exc


def _raised(get: Callable[[], tuple[object, BaseException | None]]) -> Callable[[], object]:
    def wait():
        result, error = get()
        if error is not None:
            raise error
        return result
    return wait


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("os") or monkey.is_module_patched("threading")
