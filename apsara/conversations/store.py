"""Conversation files on disk: one JSON file per conversation, per user.

Layout: `<data>/history/<user>/<conversation id>.json`, with lock files under
`<data>/locks/<user>/`. The store knows bytes, paths and locks; it knows nothing
of Flask, Gemini or what a message is.

- A file is one JSON document whose first line holds the small
  `conversation` header, so a listing reads one line per conversation, not the
  whole message tree.
- Writes go to a temp file in the same folder, are flushed and fsynced, then
  `os.replace`d over the old file, and the folder is fsynced: a reader sees the
  old or the new file, never half of one, even after SIGKILL or power loss.
- The file's mtime is set to the conversation's `updated_at`, so the newest-first
  listing sorts on `stat()` alone.
- `locked()` takes an exclusive `flock` per conversation. flock works across
  worker processes and across threads (each call opens its own descriptor), and
  the kernel drops it when a process dies, so a crash never leaves it held.
"""
from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

from ..durable import TEMP_PREFIX, fsync_dir, write_atomically
from .recency import RecencyIndex

SCHEMA_VERSION = 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUFFIX = ".json"


LOCK_TIMEOUT_S = 30.0


class LockTimeout(RuntimeError):
    """A conversation stayed locked longer than a request should wait."""


def _acquire(fd: int, timeout_s: float) -> None:
    """flock without blocking the process: under gevent a blocking flock would freeze
    every greenlet of the worker, including the one holding the lock. time.sleep
    yields to them (gevent patches it) and simply waits under threads."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout() from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class InvalidId(ValueError):
    """An id that can never name a stored conversation."""


class CorruptFile(RuntimeError):
    """A conversation file that does not parse (never written by this store)."""


def iso_to_ns(stamp: str) -> int:
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(round(dt.timestamp() * 1000)) * 1_000_000


def check_id(value: str) -> str:
    # fullmatch + ASCII-only pattern: no separators, dots-only names, NUL or look-alikes.
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise InvalidId(value)
    return value


def encode(document: dict) -> bytes:
    """The file's bytes: the header alone on line one, everything else after it.

    JSON escapes control characters inside strings, so the only raw newlines
    are the ones put here.
    """
    header = orjson.dumps(document["conversation"])
    first_line = b'{"schema_version":%d,"conversation":%s' % (SCHEMA_VERSION, header)
    rest = {k: v for k, v in document.items() if k not in ("conversation", "schema_version")}
    if not rest:
        return first_line + b"\n}\n"
    # orjson gives "{...}": splice its members after the header to keep one JSON document.
    return first_line + b",\n" + orjson.dumps(rest)[1:] + b"\n"


def _decode_header_line(line: bytes) -> dict:
    line = line.rstrip()
    if line.endswith(b","):
        line = line[:-1]
    return orjson.loads(line + b"}")["conversation"]


def _ordered(keys: list, first: int):
    head = heapq.nsmallest(first, keys)
    yield from head
    if len(head) == first:
        yield from sorted(keys)[first:]


class ConversationStore:
    def __init__(self, data_dir: Path):
        self.history_dir = Path(data_dir) / "history"
        self.locks_dir = Path(data_dir) / "locks"
        self._recency: dict[str, RecencyIndex] = {}

    def recency(self, owner: str) -> RecencyIndex:
        index = self._recency.get(owner)
        if index is None:
            folder = self._user_dir(owner)
            index = self._recency.setdefault(
                owner, RecencyIndex(folder, self.locks_dir / check_id(owner) / ".recent.lock"))
        return index

    # -- paths -----------------------------------------------------------------
    def _user_dir(self, owner: str, create: bool = False) -> Path:
        folder = self.history_dir / check_id(owner)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def path(self, owner: str, conversation_id: str) -> Path:
        # The id pattern admits no separator, dot-only name or NUL, so the path
        # cannot leave the user's folder (no resolve(): it walks the disk each call).
        return self._user_dir(owner) / (check_id(conversation_id) + _SUFFIX)

    # -- locking ---------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, owner: str, conversation_id: str, timeout_s: float = LOCK_TIMEOUT_S):
        folder = self.locks_dir / check_id(owner)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / (check_id(conversation_id) + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _acquire(fd, timeout_s)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # -- reading ---------------------------------------------------------------
    def exists(self, owner: str, conversation_id: str) -> bool:
        return self.path(owner, conversation_id).is_file()

    def read(self, owner: str, conversation_id: str) -> dict | None:
        try:
            raw = self.path(owner, conversation_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            document = orjson.loads(raw)
        except ValueError as exc:
            raise CorruptFile(conversation_id) from exc
        if document.get("schema_version") != SCHEMA_VERSION:
            raise CorruptFile(f"{conversation_id}: unknown schema_version")
        return document

    def read_header(self, owner: str, conversation_id: str) -> dict | None:
        try:
            with open(self.path(owner, conversation_id), "rb") as fh:
                return _decode_header_line(fh.readline())
        except FileNotFoundError:
            return None

    def list_headers(self, owner: str, limit: int, after: tuple[int, str] | None = None):
        """Newest first, ties by id. `after` is the (mtime_ns, id) of the last item seen.

        Returns (headers, next_position or None).
        """
        keys = [(-mtime, cid) for cid, mtime in self.recency(owner).snapshot()]
        if after is not None:
            boundary = (-after[0], after[1])
            keys = [k for k in keys if k > boundary]
        # Newest first, ties by id. A page rarely meets a deleted file, so look at
        # twice the page first and sort everything only when that runs short.
        headers, last = [], None
        for neg_mtime, conversation_id in _ordered(keys, 2 * limit + 1):
            if len(headers) == limit:
                return headers, last
            header = self.read_header(owner, conversation_id)
            if header is not None:  # deleted since the scan
                headers.append(header)
                last = (-neg_mtime, conversation_id)
        return headers, None

    # -- writing ---------------------------------------------------------------
    def write(self, owner: str, conversation_id: str, document: dict) -> None:
        """Atomically replace the conversation's file. Call inside `locked()`."""
        target = self.path(owner, conversation_id)
        self._user_dir(owner, create=True)
        mtime_ns = iso_to_ns(document["conversation"]["updated_at"])
        write_atomically(target, encode(document), mtime_ns)
        self.recency(owner).record(conversation_id, mtime_ns)

    def delete(self, owner: str, conversation_id: str) -> bool:
        target = self.path(owner, conversation_id)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(target.parent)
        self.recency(owner).record(conversation_id, None)
        return True

    def sweep_temp_files(self, older_than_s: float = 600.0) -> int:
        """Remove temp files left by writers that were killed mid-write."""
        removed, cutoff = 0, time.time() - older_than_s
        if not self.history_dir.is_dir():
            return 0
        for folder in self.history_dir.iterdir():
            if not folder.is_dir():
                continue
            for temp in folder.glob(TEMP_PREFIX + "*"):
                with contextlib.suppress(FileNotFoundError):
                    if temp.stat().st_mtime < cutoff:
                        temp.unlink()
                        removed += 1
        return removed

    def is_writable(self) -> bool:
        try:
            self.history_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.history_dir):
                pass
            return True
        except OSError:
            return False
