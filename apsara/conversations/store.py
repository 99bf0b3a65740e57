"""Conversation files on disk: a snapshot and the records appended since, per conversation.

Layout: `<data>/history/<user>/<conversation id>.json`, lock files under
`<data>/locks/<user>/`. The store knows bytes, paths, locks and records as rows
(see journal.py); it knows nothing of Flask or Gemini.

The file's bytes are file_format.py's: a snapshot, then records appended one
write (and one fsync) each, each write ending with a mark that listing reads.

- A change appends its records and a new mark in one `write`: nothing rewrites
  the conversation per turn. Listing reads two small pieces per conversation.
- A torn last line (a writer killed or the power cut mid-append) is ignored by
  readers and cut off by the next writer: a record is there whole or not at all.
- When the records outgrow the snapshot, `write()` folds them into a new
  snapshot: temp file, fsync, `os.replace`, fsync of the folder, under the lock.
  A reader holding the old file keeps reading a consistent old file.
- Files of the first format (one JSON document, schema_version 1) are read as
  they are and rewritten as a snapshot on their first change.
- The file's mtime is the conversation's `updated_at`, so the newest-first
  listing sorts on `stat()` alone (and on the recency log, see recency.py).
- The search index (search.py) is kept in step by the same calls that write the
  files: `write` indexes the whole conversation, `append` adds new texts and
  the new header or time, `delete` removes it. It is checked against the files
  at start (`check_search_index`) and can be made again from them.
- `locked()` is one writer at a time per conversation, across processes (locks.py).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import logging
import os
import re
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

from ..durable import TEMP_PREFIX, fsync_dir, on_disk_threads, write_atomically
from ..search import SearchIndex, message_text
from .file_format import (CorruptFile, decode_v1_header, encode, ends_a_mark, is_v1, last_header_at, mark_at_end,
                          mark_line, parse_lines, records_in, whole_appends)
from .filters import ListFilters
from .locks import LOCK_TIMEOUT_S, ConversationLocks, LockTimeout, Missing
from ..metrics import store_write_took
from .journal import TOUCHING, replay
from .recency import RecencyIndex, _scan
from ..recent import Recent
from .tree import MessageTree, carry_derived

log = logging.getLogger("apsara.store")

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUFFIX = ".json"
# Records are folded into a new snapshot once they outgrow it (and this floor):
# the bytes rewritten stay proportional to the bytes appended.
COMPACT_MIN_BYTES = 256 * 1024
# Parsed conversations kept per worker process (a 1,000-message one is a few MB in memory).
CACHED_CONVERSATIONS = 64
# How much of a cached file's bytes before the read position is compared, to know it is the same file.
_TAIL_BYTES = 256
# Paths of this many conversations are kept made; past that they are made afresh.
KNOWN_PATHS = 4096


class InvalidId(ValueError):
    """An id that can never name a stored conversation."""


def iso_to_ns(stamp: str) -> int:
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(round(dt.timestamp() * 1000)) * 1_000_000


def check_id(value: str) -> str:
    # fullmatch + ASCII-only pattern: no separators, dots-only names, NUL or look-alikes.
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise InvalidId(value)
    return value


def reader_copy(document: dict) -> dict:
    """A document with containers of its own (message dicts are shared, never changed in place),
    and what its tree knew of them."""
    fresh = {**document, "conversation": dict(document["conversation"]),
             "messages": list(document.get("messages", ())), "active": dict(document.get("active", {}))}
    carry_derived(document, fresh)
    return fresh


def _same_file(cached: tuple, fd: int, inode: int) -> bool:
    """Whether the open file is the one a cache entry was read from, grown since. The same
    inode number is not enough: a file replaced twice (two compactions by another process,
    or a deletion and a new conversation of the same id) may get a freed number back. Its
    first line (the snapshot's header and seq, rewritten by each replacement) and the bytes
    just before where the entry stopped reading (the last mark: seq, time, count) tell,
    even for a replacement made from the same export."""
    cached_inode, offset, _, first_line, tail = cached
    return (cached_inode == inode and os.pread(fd, len(first_line), 0) == first_line
            and os.pread(fd, len(tail), offset - len(tail)) == tail)


def _ordered(keys: list, first: int):
    head = heapq.nsmallest(first, keys)
    yield from head
    if len(head) == first:
        yield from sorted(keys)[first:]


def _index_row(owner: str, document: dict) -> tuple:
    """What the search index keeps of a whole conversation."""
    header = document["conversation"]
    messages = document.get("messages", ())
    last = max([m.get("_ended_at") or m.get("created_at") or "" for m in messages]
               + [header.get("created_at") or header["updated_at"]])
    return owner, header, iso_to_ns(header["updated_at"]), [message_text(m) for m in messages], iso_to_ns(last)


class NotKept(OSError):
    """An append whose records could not be made durable, and were taken back: nothing changed."""


class ConversationStore:
    # How often a running reply looks for a stop request: a stat() is cheap.
    stop_poll_s = 0.0
    # Failures of a write that a later try may get through: a full disk, a lock held too long.
    transient_errors = (OSError, LockTimeout)

    def __init__(self, data_dir: Path):
        self.history_dir = Path(data_dir) / "history"
        self.locks_dir = Path(data_dir) / "locks"
        self._recency: dict[str, RecencyIndex] = {}
        self.search_index = SearchIndex(Path(data_dir) / "search" / "index.sqlite")
        # path -> (inode, offset read to, document, the file's first line, the bytes just before
        # the offset): conversations this process read lately
        self._cache = Recent(CACHED_CONVERSATIONS)
        # (owner, conversation id) -> (its file, its lock file): a turn asks ~25 times, and
        # pathlib took ~5 µs to build one and again to turn it into a string for each call.
        self._paths: dict[tuple[str, str], tuple[Path, Path]] = {}
        self._locks = ConversationLocks(self._lock_path, self.exists)

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
        return self._paths_of(owner, conversation_id)[0]

    def _lock_path(self, owner: str, conversation_id: str) -> Path:
        return self._paths_of(owner, conversation_id)[1]

    def _paths_of(self, owner: str, conversation_id: str) -> tuple[Path, Path]:
        # Only ids that passed check_id are ever kept, and any other value misses.
        key = (owner, conversation_id)
        paths = self._paths.get(key) if type(owner) is str and type(conversation_id) is str else None
        if paths is None:
            # The id pattern admits no separator, dot-only name or NUL, so the paths
            # cannot leave the user's folder (no resolve(): it walks the disk each call).
            owner, conversation_id = check_id(owner), check_id(conversation_id)
            paths = (self.history_dir / owner / (conversation_id + _SUFFIX),
                     self.locks_dir / owner / (conversation_id + ".lock"))
            str(paths[0]), str(paths[1])  # made once: pathlib keeps the string it made
            if len(self._paths) >= KNOWN_PATHS:
                self._paths.clear()
            self._paths[key] = paths
        return paths

    def locked(self, owner: str, conversation_id: str, timeout_s: float = LOCK_TIMEOUT_S,
               existing: bool = False):
        """Hold the conversation's lock (see locks.py). `existing`: only for a conversation
        that is there (else Missing, and no lock file is left behind)."""
        return self._locks.locked(owner, conversation_id, timeout_s, existing)

    # -- reading ---------------------------------------------------------------
    def exists(self, owner: str, conversation_id: str) -> bool:
        return self.path(owner, conversation_id).is_file()

    def read(self, owner: str, conversation_id: str) -> dict | None:
        """The conversation as it stands now: the snapshot with every record applied."""
        loaded = self.load(owner, conversation_id)
        return loaded[0] if loaded else None

    def load(self, owner: str, conversation_id: str):
        """(document, position) or None; `position` = (inode, offset) for `follow()`.

        A conversation read before by this process is brought up to date from the
        bytes appended since (its file was not replaced): a turn reads only its own
        records, however long the conversation. The document's containers are its
        own; its message dicts may be shared with the cache, so change a conversation
        through records (or copy a message before changing it)."""
        path = self.path(owner, conversation_id)
        try:
            with open(path, "rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                cached = self._cache.get(path)
                if cached is not None and _same_file(cached, fh.fileno(), inode):
                    chunk, end = self._whole_from(fh, cached[1], owner, conversation_id)
                    return self._brought_up_to_date(path, cached, chunk[:end], conversation_id)
                raw, _ = self._whole_from(fh, 0, owner, conversation_id, after_snapshot=True)
        except FileNotFoundError:
            self._cache.forget(path)
            return None
        loaded = self._parse(raw, inode, conversation_id)
        end = loaded[1][1]
        self._remember(path, loaded, raw[:raw.find(b"\n") + 1], raw[max(0, end - _TAIL_BYTES):end])
        return reader_copy(loaded[0]), loaded[1]

    def _whole_from(self, fh, offset: int, owner: str, conversation_id: str, after_snapshot: bool = False):
        """(the file's bytes from `offset`, how many of them to take). Whole appends only
        while a writer holds the lock: records of an append whose mark is not there yet are
        landing now. With no writer, whole lines after the last mark are a crash's (no mark
        made it to disk) and are taken, as the next writer keeps them. `after_snapshot`:
        `offset` is 0 and the snapshot's two lines come first."""
        fh.seek(offset)
        chunk = fh.read()
        lines_end = chunk.rfind(b"\n") + 1
        start = 0
        if after_snapshot:
            start = chunk.find(b"\n", chunk.find(b"\n") + 1) + 1
            if start == 0 or is_v1(chunk[:32]):
                return chunk, lines_end  # the first format, or not even a snapshot: the parser decides
        end = start + whole_appends(chunk[start:lines_end])
        if end < lines_end:
            with self._locks.no_writer(owner, conversation_id) as settled:
                if settled:  # the append that was landing has landed, or nobody was writing
                    fh.seek(offset)
                    chunk = fh.read()
                    end = chunk.rfind(b"\n") + 1
        return chunk[:end] if after_snapshot else chunk, end

    def _brought_up_to_date(self, path, cached, chunk: bytes, conversation_id: str):
        """`chunk`: what to take of the bytes after the cached position."""
        inode, offset, document, first_line, tail = cached
        end = len(chunk)
        records = records_in(chunk, conversation_id)
        document = reader_copy(document)
        if records:
            replay(document, records)
            self._remember(path, (document, (inode, offset + end)), first_line,
                           (tail + chunk[-_TAIL_BYTES:])[-_TAIL_BYTES:])
            return reader_copy(document), (inode, offset + end)
        return document, (inode, offset + end)

    def _remember(self, path, loaded, first_line: bytes, tail: bytes) -> None:
        document, (inode, offset) = loaded
        MessageTree.of(document).path_length()  # walked once here; each later read gets a copy of what it found
        self._cache.put(path, (inode, offset, document, first_line, tail))

    def _parse(self, raw: bytes, inode: int, conversation_id: str):
        if is_v1(raw[:32]):
            try:
                document = orjson.loads(raw)
            except ValueError as exc:
                raise CorruptFile(conversation_id) from exc
            document.pop("schema_version", None)
            document.setdefault("seq", 0)
            return document, (inode, len(raw))
        document, records, end, _ = parse_lines(raw, conversation_id)
        if records:
            replay(document, records)
        return document, (inode, end)

    def follow(self, owner: str, conversation_id: str, position: tuple[int, int]):
        """Records appended since `position`: (records, new position), or (None, None)
        when the file was replaced (compacted) or deleted: read it again whole."""
        inode, offset = position
        try:
            with open(self.path(owner, conversation_id), "rb") as fh:
                if os.fstat(fh.fileno()).st_ino != inode or not ends_a_mark(fh.fileno(), offset):
                    return None, None
                chunk, end = self._whole_from(fh, offset, owner, conversation_id)
        except FileNotFoundError:
            return None, None
        return records_in(chunk[:end], conversation_id), (inode, offset + end)

    def listen_for_stops(self, on_stop, wanted) -> None:
        """Nothing to listen to: a running reply asks with one stat() a watcher round."""

    def may_have_news(self, owner: str, conversation_id: str, position: tuple[int, int]) -> bool:
        """Whether `follow()` could find anything after `position` (or that the conversation
        is gone or replaced): one stat(), no read."""
        inode, offset = position
        try:
            stat = os.stat(self.path(owner, conversation_id))
        except FileNotFoundError:
            return True
        return stat.st_ino != inode or stat.st_size != offset

    def conversation_ids(self, owner: str) -> list[str]:
        try:
            folder = self._user_dir(owner)
        except InvalidId:
            return []
        return [p.stem for p in folder.glob("*" + _SUFFIX) if not p.name.startswith(".")] if folder.is_dir() else []

    def read_header(self, owner: str, conversation_id: str) -> dict | None:
        try:
            with open(self.path(owner, conversation_id), "rb") as fh:
                first = fh.readline()
                if is_v1(first):
                    return decode_v1_header(first)
                size = os.fstat(fh.fileno()).st_size
                mark = mark_at_end(fh.fileno(), size)
                if mark is None:  # the last append was cut short: read it all
                    fh.seek(0)
                    document, records, _, _ = parse_lines(fh.read(), conversation_id)
                    return replay(document, records)["conversation"] if records else document["conversation"]
                head = orjson.loads(first)
                if mark.get("seq", 0) == head.get("seq", 0):
                    return head["conversation"]  # a bare snapshot: its header is current
                if mark.get("header_at"):
                    fh.seek(mark["header_at"])
                    header = orjson.loads(fh.readline())["conversation"]
                else:
                    header = head["conversation"]
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CorruptFile(conversation_id) from exc
        return {**header, "updated_at": mark["updated_at"], "message_count": mark["message_count"]}

    def list_headers(self, owner: str, limit: int, after: tuple[int, str] | None = None,
                     filters: ListFilters = ListFilters()):
        """Newest first, ties by id, those the filters accept. `after` is the (mtime_ns, id)
        of the last item seen.

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
            if header is not None and filters.accepts(header):  # None: deleted since the scan
                headers.append(header)
                last = (-neg_mtime, conversation_id)
        return headers, None

    # -- writing ---------------------------------------------------------------
    def write(self, owner: str, conversation_id: str, document: dict) -> None:
        """Atomically replace the conversation's file with a snapshot of `document`.
        Call inside `locked()`: creation and compaction."""
        target = self.path(owner, conversation_id)
        self._user_dir(owner, create=True)
        mtime_ns = iso_to_ns(document["conversation"]["updated_at"])
        self._cache.forget(target)
        write_atomically(target, encode(document), mtime_ns)
        self.recency(owner).record(conversation_id, mtime_ns)
        self._indexing(self.search_index.put_many, [_index_row(owner, document)])

    def append(self, owner: str, conversation_id: str, records: list[dict], *, message_count: int | None = None,
               sync: bool = True, on_written=None, reply_texts: dict[str, str] | None = None) -> dict:
        """Append records (numbered here) and a mark in one write; then fsync unless
        `sync` is False. `on_written()` runs first, and the fsync as what it started waits (see
        `on_disk_threads`). `reply_texts`:
        the text of replies these records end, when the caller has it (else it is read back
        for the search index). Call inside `locked()`. Returns the new mark (with `size`, and
        the follow() positions after these records and before them: `position`, `began_at`)."""
        path = self.path(owner, conversation_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            raise Missing(conversation_id) from None
        try:
            if is_v1(os.pread(fd, 32, 0)):
                os.close(fd)
                fd = -1
                self._migrate(owner, conversation_id)
                fd = os.open(path, os.O_RDWR | os.O_APPEND)
            size = self._repair(fd, conversation_id)
            inode = os.fstat(fd).st_ino
            mark = mark_at_end(fd, size) or self._rebuild_mark(fd, conversation_id)
            lines, offset, seq = [], size, mark["seq"]
            updated_at = was_updated_at = mark["updated_at"]
            for rec in records:
                seq += 1
                rec["seq"] = seq
                line = orjson.dumps(rec) + b"\n"
                if rec["type"] == "conversation":
                    mark["header_at"] = offset
                if rec["type"] in TOUCHING:
                    updated_at = max(updated_at or "", rec["at"])
                lines.append(line)
                offset += len(line)
            mark.update(seq=seq, updated_at=updated_at)
            if message_count is not None:
                mark["message_count"] = message_count
            data = b"".join(lines) + mark_line(mark)
            if os.write(fd, data) != len(data):  # a full disk took part of it: take it back
                os.ftruncate(fd, size)
                raise OSError(errno.ENOSPC, "no room for the conversation's new records")
            mtime_ns = iso_to_ns(updated_at) if updated_at else None
            if mtime_ns is not None and not sync:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            index = None
            if mtime_ns is not None and any(r["type"] in TOUCHING for r in records):
                self.recency(owner).record(conversation_id, mtime_ns)
                index = self._index_entry(owner, conversation_id, records, updated_at, reply_texts)

            def write_index():
                # True; False when the conversation is not in the index yet; or the SQLite error,
                # logged below: on the disk's thread even logging's locks are gevent's.
                try:
                    return index is None or self.search_index.update(owner, conversation_id, *index)
                except sqlite3.Error as exc:
                    return exc

            if sync:
                own_fd = os.dup(fd)  # the thread's own: the caller may be killed and close `fd` meanwhile

                def make_durable() -> float:
                    started = time.perf_counter()
                    try:
                        os.fsync(own_fd)
                        if mtime_ns is not None:
                            # Only now: the index is written beside the fsync, and a machine that
                            # stops first leaves it ahead of the file. The start-up check trusts a
                            # file whose time is the one indexed, so that time must not reach the
                            # disk before the records do.
                            os.utime(own_fd, ns=(mtime_ns, mtime_ns))
                    finally:
                        os.close(own_fd)
                    return time.perf_counter() - started

                # The index is written beside the fsync, not after it: a reply's end waited for
                # the two in turn.
                try:
                    took, indexed = on_disk_threads([make_durable, write_index], meanwhile=on_written)
                except OSError as exc:
                    if self._take_back(fd, size, owner, conversation_id, was_updated_at, index is not None):
                        raise NotKept(exc.errno, f"the disk refused the change ({exc.strerror})") from exc
                    raise
                store_write_took(took)
            else:
                indexed = write_index()
                if on_written is not None:
                    on_written()
            if indexed is False:
                self._index_whole(owner, conversation_id)
            elif isinstance(indexed, sqlite3.Error):  # the files are the truth; the next start mends it
                log.error("search index: could not keep up with a change: %s", indexed)
        finally:
            if fd >= 0:
                os.close(fd)
        mark["size"] = size + len(data)
        mark["position"] = (inode, mark["size"])  # where a follow() of what comes next starts
        mark["began_at"] = (inode, size)  # and where these records start
        return mark

    def _take_back(self, fd: int, size: int, owner: str, conversation_id: str, was_updated_at: str | None,
                   indexed: bool) -> bool:
        """Put the file back as it was before records that could not be made durable: their
        caller is told the change failed, and one that tries again must not find it stored
        twice. A new file, not a cut: a reader that read the records meanwhile knows the file
        by its inode and where it stopped, and a cut file that the next append (the same
        message sent again) grows back to that very length would look unchanged to it. The
        recency log and the search index go back with it; their failures are only logged (the
        file is the truth, and a search hit on what it no longer holds shows no snippet).
        False when the disk refuses the new file too: the records stay, as written."""
        was_ns = iso_to_ns(was_updated_at) if was_updated_at else None
        try:
            write_atomically(self.path(owner, conversation_id), os.pread(fd, size, 0), mtime_ns=was_ns)
        except OSError:
            log.exception("conversation %s: could not take back records the disk did not keep", conversation_id)
            return False
        log.error("conversation %s: the disk did not keep its new records; they were taken back", conversation_id)
        if indexed:
            try:
                if was_ns is not None:
                    self.recency(owner).record(conversation_id, was_ns)
                self._index_whole(owner, conversation_id)
            except (OSError, sqlite3.Error):
                log.exception("conversation %s: its listing or search index may still show what was taken back",
                              conversation_id)
        return True

    def _repair(self, fd: int, conversation_id: str) -> int:
        """Cut off a torn last line left by a writer that died mid-append; returns the size."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            chunk = os.pread(fd, end - start, start)
            found = chunk.rfind(b"\n")
            if found >= 0:
                cut = start + found + 1
                os.ftruncate(fd, cut)
                log.warning("conversation %s: cut off a torn last record (%d bytes)", conversation_id, size - cut)
                return cut
            end = start
        raise CorruptFile(conversation_id)

    def _rebuild_mark(self, fd: int, conversation_id: str) -> dict:
        """The mark of a file whose last append lost it (a crash between record and mark)."""
        size = os.fstat(fd).st_size
        raw = os.pread(fd, size, 0)
        document, records, _, mark = parse_lines(raw, conversation_id)
        base = (mark or {}).get("base", 0)
        header_at = last_header_at(raw)  # the lost mark may have been the first to point at a new one
        if records:
            replay(document, records)
        header = document["conversation"]
        return {"seq": document.get("seq", 0), "updated_at": header.get("updated_at"),
                "message_count": header.get("message_count", 0), "header_at": header_at, "base": base}

    def _migrate(self, owner: str, conversation_id: str) -> None:
        """A first-format file becomes a snapshot before its first record. Its header's
        message count is made true on the way: a first record that adds no message (a
        reply's end) would otherwise carry a wrong one on."""
        document = self.read(owner, conversation_id)
        document["conversation"]["message_count"] = MessageTree.of(document).path_length()
        self.write(owner, conversation_id, document)

    def needs_compaction(self, mark: dict) -> bool:
        base = mark.get("base", 0)
        return mark.get("size", 0) - base > max(COMPACT_MIN_BYTES, base)

    def delete(self, owner: str, conversation_id: str) -> bool:
        target = self.path(owner, conversation_id)
        self._cache.forget(target)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(target.parent)
        self.recency(owner).record(conversation_id, None)
        self._indexing(self.search_index.remove, owner, conversation_id)
        return True

    # -- the search index ---------------------------------------------------------
    @staticmethod
    def _indexing(step, *args) -> None:
        # The files are the truth: an index write that fails never fails the change. The row
        # keeps its old updated_at, so the check at the next start finds and mends it.
        try:
            step(*args)
        except sqlite3.Error:
            log.exception("search index: could not keep up with a change")

    def _index_entry(self, owner: str, conversation_id: str, records: list[dict], updated_at: str,
                     reply_texts: dict[str, str] | None = None) -> tuple:
        """What appended records change in the index: `search_index.update`'s arguments
        after (owner, conversation id). Gathered here, written on the disk's thread."""
        texts, header, last, ended = [], None, None, set()
        for rec in records:
            if rec["type"] == "message":
                texts.append(message_text(rec["message"]))
                last = max(last or "", rec["at"])
            elif rec["type"] == "reply":
                if reply_texts and rec["id"] in reply_texts:
                    texts.append(reply_texts[rec["id"]])
                else:
                    ended.add(rec["id"])
                last = max(last or "", rec["at"])
            elif rec["type"] == "conversation":
                header = rec["conversation"]
        if ended:  # a reply's text came in many records: read it whole once it ended
            document = self.read(owner, conversation_id) or {}
            for message in reversed(document.get("messages", ())):  # replies end near the end
                if message["id"] in ended:
                    texts.append(message_text(message))
                    ended.discard(message["id"])
                    if not ended:
                        break
        return updated_at, iso_to_ns(updated_at), texts, header, iso_to_ns(last) if last else None

    def _index_whole(self, owner: str, conversation_id: str) -> None:
        document = self.read(owner, conversation_id)
        if document is not None:
            self._indexing(self.search_index.put_many, [_index_row(owner, document)])

    def search(self, owner: str, query: str, limit: int, after: tuple[int, str] | None = None,
               filters: ListFilters = ListFilters()) -> list[tuple[dict, str, tuple[int, str]]]:
        """(header, snippet, position) of the conversations matching `query`, newest first."""
        found = []
        for hit in self.search_index.search(owner, query, limit=limit, after=after, archived=filters.archived,
                                            pinned=filters.pinned, temporary=filters.temporary):
            header = self.read_header(owner, hit.id)
            if header is not None:  # deleted since
                found.append((header, hit.snippet, (hit.updated_ns, hit.id)))
        return found

    def expired_temporary(self, cutoff_ns: int) -> list[tuple[str, str]]:
        """(owner, id) of temporary conversations whose last message is older than `cutoff_ns`."""
        return self.search_index.expired_temporary(cutoff_ns)

    def _owners(self) -> list[str]:
        if not self.history_dir.is_dir():
            return []
        return [f.name for f in self.history_dir.iterdir() if f.is_dir() and ID_PATTERN.fullmatch(f.name)]

    def check_search_index(self) -> int:
        """Mend the index where it differs from the files (a crash between the two writes, a restored
        backup, a copied folder); one process at a time. Returns how many conversations it mended.
        The listing log (recency.py) of a user whose index differed is mended from the same scan:
        a writer puts its line there before it writes the index, so a missing line shows here."""
        lock = self.search_index.path.parent / ".check.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            indexed = self.search_index.indexed()
            scans = {owner: _scan(self.history_dir / owner) for owner in self._owners()}
            on_disk = {(owner, cid): ns for owner, scanned in scans.items()
                       for cid, ns in scanned.items() if ID_PATTERN.fullmatch(cid)}
            differing = {key[0] for key in indexed.keys() ^ on_disk.keys()}
            mended, rows = 0, []
            for key, mtime_ns in on_disk.items():
                known = indexed.get(key)
                if known is not None and known[0] == mtime_ns:
                    continue
                differing.add(key[0])
                try:  # a file's time can differ from its updated_at (a copy): the header decides
                    header = self.read_header(*key)
                    if header is None or (known is not None and known[1] == header["updated_at"]):
                        continue
                    document = self.read(*key)
                except CorruptFile:
                    continue
                if document is not None:
                    rows.append(_index_row(key[0], document))
                    mended += 1
                if len(rows) >= 500:
                    self.search_index.put_many(rows)
                    rows = []
            self.search_index.put_many(rows)
            for owner, cid in indexed.keys() - on_disk.keys():
                self.search_index.remove(owner, cid)
                mended += 1
            for owner in differing & scans.keys():
                self.recency(owner).mend(scans[owner])
            return mended
        finally:
            os.close(fd)

    def rebuild_search_index(self) -> int:
        """Make the index again from the files; returns how many conversations it holds."""
        self.search_index.clear()
        return self.check_search_index()

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
