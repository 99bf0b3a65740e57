"""Newest-first order of one user's conversations, without a stat() per file.

Listing 10,000 conversations by stat()ing every file costs ~60 ms. Instead each
write appends one line, `<mtime_ns> <id>` (or `- <id>` for a delete), to the
user's `.recent.log`, and each worker process keeps the id -> mtime map in
memory, reading only the lines added since it last looked.

The files stay the truth: a process builds its map from a full scan of the
folder the first time, and again whenever the log was compacted: its inode
changed, or its first line did (a log replaced twice may get a freed inode
number back, so each compacted log begins with a line of its own). A writer
killed between its file write and its log line leaves that one conversation's
order stale until its next write or the next start (which mends the log);
it never loses the conversation. Appends hold a shared flock and compaction an exclusive
one, so no line is written to a log that is being replaced.
"""
from __future__ import annotations

import fcntl
import os
import secrets
import threading
from pathlib import Path

LOG_NAME = ".recent.log"
COMPACT_BYTES = 4 * 1024 * 1024
_SUFFIX = ".json"


def _scan(folder: Path) -> dict[str, int]:
    times = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(_SUFFIX) and not name.startswith("."):
                    try:
                        times[name[: -len(_SUFFIX)]] = entry.stat().st_mtime_ns
                    except FileNotFoundError:
                        pass
    except FileNotFoundError:
        pass
    return times


class RecencyIndex:
    def __init__(self, folder: Path, lock_path: Path):
        self.folder = folder
        self.log_path = folder / LOG_NAME
        self.lock_path = lock_path
        self._mutex = threading.Lock()
        self._times: dict[str, int] | None = None
        self._offset = 0
        self._inode: int | None = None
        self._first_line = b""

    def _flock(self, mode: int) -> int:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, mode)
        return fd

    # -- writers ----------------------------------------------------------------
    def record(self, conversation_id: str, mtime_ns: int | None) -> None:
        """Note a write (mtime) or a delete (None). Call after the file change is durable."""
        line = (f"- {conversation_id}\n" if mtime_ns is None else f"{mtime_ns} {conversation_id}\n").encode()
        lock = self._flock(fcntl.LOCK_SH)
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one small O_APPEND write: never interleaved
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        finally:
            os.close(lock)
        if size > COMPACT_BYTES:
            self.compact()

    def compact(self) -> None:
        lock = self._flock(fcntl.LOCK_EX)
        try:
            times = _scan(self.folder)
            temp = self.folder / (LOG_NAME + ".new")
            # A first line of its own, which readers compare (readers skip it as a line).
            first = f"# {secrets.token_hex(8)}\n"
            temp.write_bytes((first + "".join(f"{t} {i}\n" for i, t in times.items())).encode())
            os.replace(temp, self.log_path)
        finally:
            os.close(lock)

    def mend(self, on_disk: dict[str, int]) -> bool:
        """Compact the log when it disagrees with the folder's scan `on_disk` (a writer killed
        between its file and its line): every process then scans again, where each would
        otherwise keep the stale order until the log next grew past COMPACT_BYTES. True if it did."""
        try:
            with open(self.log_path, "rb") as fh:
                logged = _replay(fh.read())
        except FileNotFoundError:
            logged = {}
        if logged == on_disk:
            return False
        self.compact()
        return True

    # -- readers ----------------------------------------------------------------
    def snapshot(self) -> list[tuple[str, int]]:
        """(id, mtime_ns) of every conversation of this user, up to date with the log."""
        with self._mutex:
            try:
                with open(self.log_path, "rb") as fh:
                    stat = os.fstat(fh.fileno())
                    inode, size, first_line = stat.st_ino, stat.st_size, fh.readline()
            except FileNotFoundError:
                inode, size, first_line = None, 0, b""
            if (self._times is None or inode != self._inode or size < self._offset
                    or not first_line.startswith(self._first_line)):
                # Remember where the log ends *before* scanning: later lines are replayed.
                self._times, self._offset, self._inode = _scan(self.folder), size, inode
                self._first_line = b""
            elif size > self._offset:
                self._follow()
            if not self._first_line and first_line.endswith(b"\n"):  # a whole line: it stays
                self._first_line = first_line
            return list(self._times.items())

    def _follow(self) -> None:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += _replay(chunk, self._times)


def _replay(chunk: bytes, times: dict[str, int] | None = None):
    """Apply a log's whole lines to `times`; returns how many bytes they are (or, with no
    `times`, the map the lines make)."""
    made = times is None
    times = {} if made else times
    end = chunk.rfind(b"\n") + 1  # only whole lines
    for line in chunk[:end].splitlines():
        stamp, _, conversation_id = line.decode().partition(" ")
        if stamp == "-":
            times.pop(conversation_id, None)
        elif stamp.isdigit():
            times[conversation_id] = int(stamp)
    return times if made else end
