"""The file store's search index: SQLite full-text search beside the history.

One database (`<data>/search/index.sqlite`, WAL, shared by every worker
process) holds, per conversation, its listing fields (updated time, the
archived / pinned / temporary flags) and one row of text for its title and
for each version of each message. The store writes it in the same path as the
history; each conversation's row carries the `updated_at` it was indexed at,
so a crash between the two writes, a restored backup or a hand-copied folder
shows up as a difference (`drifted`), and `rebuild` (also
`python -m apsara.search --rebuild`) makes it again from the files.

A query is words, all of which must occur in one text (the title or one
message), matched case-insensitively as whole words (accents folded); hits come newest
first (ties by id) with the listing's cursor, each with a plain-text snippet around the
first match.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from . import checkpoints
from .durable import native_lock

SNIPPET_CHARS = 300
SCHEMA_VERSION = 3  # another version on disk: the tables are made again and filled from the files
_WORD = re.compile(r"\w+", re.UNICODE)
_SCHEMA = """
CREATE TABLE conversations (
    owner TEXT NOT NULL, id TEXT NOT NULL, updated_ns INTEGER NOT NULL, updated_at TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0, pinned INTEGER NOT NULL DEFAULT 0, temporary INTEGER NOT NULL DEFAULT 0,
    last_message_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, id));
CREATE INDEX conversations_recent ON conversations (owner, updated_ns DESC, id);
CREATE INDEX conversations_temporary ON conversations (temporary, last_message_ns);
CREATE TABLE text_owners (
    rowid INTEGER PRIMARY KEY, owner TEXT NOT NULL, conversation TEXT NOT NULL, kind TEXT NOT NULL);
CREATE INDEX text_owners_conversation ON text_owners (owner, conversation);
CREATE VIRTUAL TABLE texts USING fts5 (body, tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE terms USING fts5vocab (texts, 'row')
"""
# Which text belongs to whom lives in a plain table beside the full-text one (same rowid): FTS5
# finds nothing by an unindexed column without reading every row.
_TABLES = ("terms", "texts", "text_owners", "conversations")
# A word in more texts than this is "common": instead of collecting every text that holds it, the
# newest conversations are checked one by one until the page is full (see `search`).
COMMON_TEXTS = 5000
# SQLite's INTEGER is 64 bits: a time in nanoseconds past 2262-04-11 (or before 1677) does not
# fit, and binding it raises OverflowError, which is no sqlite3.Error. Imports refuse such times,
# but a file written before they did (or copied in by hand) must not stop every start-up check.
_NS_MIN, _NS_MAX = -(2 ** 63), 2 ** 63 - 1
log = logging.getLogger("apsara")


def message_text(message: dict) -> str:
    """What a message offers to search: its text parts."""
    return "\n".join(p.get("text", "") for p in message.get("parts", ()) if p.get("type") == "text")


def _fitting(ns: int | None, owner: str, conversation_id: str) -> int | None:
    """A time the index can hold: one out of range is clamped, so the conversation stays listed
    (first or last) and searchable, and the start-up check finds it in step, not failing."""
    if ns is None or _NS_MIN <= ns <= _NS_MAX:
        return ns
    log.warning("search index: conversation %s of %s has a time out of range; indexed at the nearest end",
                conversation_id, owner)
    return min(max(ns, _NS_MIN), _NS_MAX)


def words_of(query: str) -> list[str]:
    return _WORD.findall(query.lower())


def _match_expression(words: list[str]) -> str:
    # Each word quoted, so no FTS syntax gets through; FTS5 ANDs them. Whole words, not prefixes:
    # a short prefix expands to thousands of terms (4 s against 4 ms on 200,000 messages).
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def snippet(text: str, words: list[str]) -> str:
    """At most SNIPPET_CHARS of plain text around the first word that matches."""
    folded = text.lower()
    starts = [m.start() for word in words if (m := re.search(r"\b" + re.escape(word) + r"\b", folded))]
    first = min(starts, default=0)
    begin = max(0, min(first - SNIPPET_CHARS // 3, len(text) - SNIPPET_CHARS))
    piece = " ".join(text[begin:begin + SNIPPET_CHARS].split())
    return piece[:SNIPPET_CHARS]


class _Shared:
    """One index file's connection in this process (made again after a fork), shared by its
    threads and greenlets under the lock, as the usage ledger's is: SQLite calls never yield
    to gevent, so more connections would only hold more file descriptors."""

    def __init__(self):
        self.lock = native_lock(reentrant=True)  # appends index on the disk's threads
        self.connection: sqlite3.Connection | None = None
        self.pid: int | None = None


_OPEN: "OrderedDict[Path, _Shared]" = OrderedDict()
_OPEN_LOCK = native_lock()
MAX_OPEN = 4  # a server has one index; a test process makes many, and each connection holds 3 files
_INHERITED: list = []


def _start_afresh_after_fork() -> None:
    """A forked child must not wait on a lock another thread of its parent held at the fork,
    nor use (or close) the parent's SQLite connections: it opens its own."""
    global _OPEN_LOCK
    _OPEN_LOCK = native_lock()
    _INHERITED.extend(_OPEN.values())  # kept, never closed here: closing would touch the parent's locks
    _OPEN.clear()


os.register_at_fork(after_in_child=_start_afresh_after_fork)


def _shared(path: Path) -> _Shared:
    with _OPEN_LOCK:
        shared = _OPEN.get(path)
        if shared is None:
            shared = _OPEN[path] = _Shared()
        _OPEN.move_to_end(path)
        for old_path in list(_OPEN)[:-MAX_OPEN]:
            old = _OPEN[old_path]
            if old.lock.acquire(blocking=False):  # never close one in use
                try:
                    if old.connection is not None and old.pid == os.getpid():
                        old.connection.close()
                    old.connection = None  # a thread that took this entry just before connects again
                    del _OPEN[old_path]
                finally:
                    old.lock.release()
        return shared


@dataclass
class Hit:
    id: str
    updated_ns: int
    snippet: str


class SearchIndex:
    def __init__(self, path: Path):
        self.path = path
        self._checkpoints = checkpoints.for_file(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        checkpoints.switch_to_wal(db, 30)
        db.execute("PRAGMA synchronous=NORMAL")  # the history is the durable copy; this can be rebuilt
        self._checkpoints.writer_settings(db)
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # another process won
                for table in _TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        return db

    @contextlib.contextmanager
    def _reading(self):
        shared = _shared(self.path)
        with shared.lock:
            if shared.connection is None or shared.pid != os.getpid():
                shared.connection, shared.pid = self._connect(), os.getpid()
            yield shared.connection

    @contextlib.contextmanager
    def _writing(self):
        with self._reading() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        self._checkpoints.wrote()

    # -- keeping in step ----------------------------------------------------------
    def put(self, owner: str, header: dict, updated_ns: int, texts: list[str], last_message_ns: int) -> None:
        """Index a whole conversation (replacing what was there)."""
        self.put_many([(owner, header, updated_ns, texts, last_message_ns)])

    def put_many(self, rows) -> None:
        """Index whole conversations, (owner, header, updated_ns, texts, last_message_ns) each, in one
        transaction: a rebuild of thousands takes seconds instead of minutes."""
        with self._writing() as db:
            for owner, header, updated_ns, texts, last_message_ns in rows:
                last_message_ns = _fitting(last_message_ns, owner, header["id"])
                self._delete_texts(db, owner, header["id"])
                self._insert(db, owner, header["id"], "title", [header.get("title") or ""])
                self._insert(db, owner, header["id"], "message", texts)
                self._put_header(db, owner, header, updated_ns)
                db.execute("UPDATE conversations SET last_message_ns = ? WHERE owner = ? AND id = ?",
                           (last_message_ns, owner, header["id"]))

    def update(self, owner: str, conversation_id: str, updated_at: str, updated_ns: int, texts: list[str],
               header: dict | None = None, last_message_ns: int | None = None) -> bool:
        """A conversation changed: new message texts, its new time, and its header when that changed
        (title, flags). False when the conversation is not indexed: the caller indexes it whole."""
        updated_ns = _fitting(updated_ns, owner, conversation_id)
        last_message_ns = _fitting(last_message_ns, owner, conversation_id)
        with self._writing() as db:
            if header is not None:
                self._delete_texts(db, owner, conversation_id, kind="title")
                self._insert(db, owner, conversation_id, "title", [header.get("title") or ""])
                self._put_header(db, owner, {**header, "id": conversation_id, "updated_at": updated_at},
                                 updated_ns)
            else:
                found = db.execute("UPDATE conversations SET updated_ns = ?, updated_at = ? WHERE owner = ? "
                                   "AND id = ?", (updated_ns, updated_at, owner, conversation_id)).rowcount
                if not found:
                    return False
            if last_message_ns is not None:
                db.execute("UPDATE conversations SET last_message_ns = max(last_message_ns, ?) "
                           "WHERE owner = ? AND id = ?", (last_message_ns, owner, conversation_id))
            self._insert(db, owner, conversation_id, "message", texts)
        return True

    @staticmethod
    def _insert(db, owner: str, conversation_id: str, kind: str, texts: list[str]) -> None:
        for text in texts:
            if text:
                rowid = db.execute("INSERT INTO text_owners (owner, conversation, kind) VALUES (?, ?, ?)",
                                   (owner, conversation_id, kind)).lastrowid
                db.execute("INSERT INTO texts (rowid, body) VALUES (?, ?)", (rowid, text))

    @staticmethod
    def _delete_texts(db, owner: str, conversation_id: str, kind: str | None = None) -> None:
        where = "owner = ? AND conversation = ?" + (" AND kind = ?" if kind else "")
        params = (owner, conversation_id, kind) if kind else (owner, conversation_id)
        rowids = [r for (r,) in db.execute(f"SELECT rowid FROM text_owners WHERE {where}", params)]
        if rowids:
            db.executemany("DELETE FROM texts WHERE rowid = ?", [(r,) for r in rowids])
            db.execute(f"DELETE FROM text_owners WHERE {where}", params)

    @staticmethod
    def _put_header(db, owner: str, header: dict, updated_ns: int) -> None:
        updated_ns = _fitting(updated_ns, owner, header["id"])
        db.execute("INSERT INTO conversations (owner, id, updated_ns, updated_at, archived, pinned, temporary) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, id) DO UPDATE SET "
                   "updated_ns = excluded.updated_ns, updated_at = excluded.updated_at, "
                   "archived = excluded.archived, pinned = excluded.pinned, temporary = excluded.temporary",
                   (owner, header["id"], updated_ns, header["updated_at"], bool(header.get("archived")),
                    bool(header.get("pinned")), bool(header.get("temporary"))))

    def remove(self, owner: str, conversation_id: str) -> None:
        with self._writing() as db:
            self._delete_texts(db, owner, conversation_id)
            db.execute("DELETE FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id))

    def clear(self) -> None:
        with self._writing() as db:
            for table in _TABLES[1:]:
                db.execute(f"DELETE FROM {table}")

    def expired_temporary(self, cutoff_ns: int) -> list[tuple[str, str]]:
        """(owner, id) of temporary conversations whose last message is older than the cutoff."""
        with self._reading() as db:
            rows = db.execute("SELECT owner, id FROM conversations WHERE temporary = 1 AND last_message_ns < ?",
                              (cutoff_ns,)).fetchall()
        return [(owner, cid) for owner, cid in rows]

    def indexed(self) -> dict[tuple[str, str], tuple[int, str]]:
        """(owner, id) -> the (updated_ns, updated_at) each conversation was indexed at."""
        with self._reading() as db:
            rows = db.execute("SELECT owner, id, updated_ns, updated_at FROM conversations").fetchall()
        return {(owner, cid): (ns, stamp) for owner, cid, ns, stamp in rows}

    # -- searching ------------------------------------------------------------------
    def search(self, owner: str, query: str, *, limit: int, after: tuple[int, str] | None = None,
               archived: bool = False, pinned: bool = False, temporary: bool = False) -> list[Hit]:
        """Newest first, ties by id. Two ways, whichever reads less: a query with a rare word
        collects the texts that match and sorts their conversations; one made only of common
        words walks the conversations newest first and asks each whether a text of it matches,
        stopping once the page is full."""
        words = words_of(query)
        if not words:
            return []
        with self._reading() as db:
            return self._search(db, owner, words, limit, after, archived, pinned, temporary)

    def _search(self, db, owner: str, words: list[str], limit: int, after, archived: bool, pinned: bool,
                temporary: bool) -> list[Hit]:
        expression = _match_expression(words)
        where = ["c.owner = ?", "c.archived = ?", "c.temporary = ?"]
        params: list = [owner, archived, temporary]
        if pinned:
            where.append("c.pinned = 1")
        if after is not None:
            where.append("(c.updated_ns < ? OR (c.updated_ns = ? AND c.id > ?))")
            params += [after[0], after[0], after[1]]
        listed = "SELECT c.id, c.updated_ns FROM conversations c WHERE " + " AND ".join(where)
        hits = []
        if self._rarest(db, words) <= COMMON_TEXTS:
            found = db.execute(
                # `+o.owner`: find the texts by the words, never every text of the owner by its index
                listed + " AND c.id IN (SELECT o.conversation FROM text_owners o WHERE +o.owner = ? AND o.rowid IN"
                " (SELECT rowid FROM texts WHERE texts MATCH ?)) ORDER BY c.updated_ns DESC, c.id LIMIT ?",
                [*params, owner, expression, limit]).fetchall()
            for conversation_id, updated_ns in found:
                body = self._first_match(db, owner, conversation_id, expression)
                hits.append(Hit(conversation_id, updated_ns, snippet(body or "", words)))
            return hits
        for conversation_id, updated_ns in db.execute(listed + " ORDER BY c.updated_ns DESC, c.id", params):
            body = self._first_match(db, owner, conversation_id, expression)
            if body is not None:
                hits.append(Hit(conversation_id, updated_ns, snippet(body, words)))
                if len(hits) == limit:
                    break
        return hits

    @staticmethod
    def _rarest(db, words: list[str]) -> int:
        """How many texts hold the rarest of the words (FTS5's own term counts)."""
        counts = []
        for word in words:
            row = db.execute("SELECT doc FROM terms WHERE term = ?", (word,)).fetchone()
            counts.append(row[0] if row else 0)
        return min(counts)

    @staticmethod
    def _first_match(db, owner: str, conversation_id: str, expression: str) -> str | None:
        """The conversation's first text (the title first) that matches, or None."""
        rowids = db.execute("SELECT rowid FROM text_owners WHERE owner = ? AND conversation = ? "
                            "ORDER BY kind = 'title' DESC, rowid", (owner, conversation_id)).fetchall()
        for (rowid,) in rowids:
            row = db.execute("SELECT body FROM texts WHERE texts MATCH ? AND rowid = ?", (expression, rowid)).fetchone()
            if row is not None:
                return row[0]
        return None


def main(argv=None) -> int:
    """`python -m apsara.search --rebuild`: make the index again from the files;
    without `--rebuild`, mend only where it differs from them."""
    import argparse

    from .config import from_env
    from .conversations.store import ConversationStore

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="drop the index and index every conversation")
    args = parser.parse_args(argv)
    store = ConversationStore(from_env().data_dir)
    if args.rebuild:
        count = store.rebuild_search_index()
        print(f"indexed {count} conversation(s) in {store.search_index.path}")
    else:
        count = store.check_search_index()
        print(f"mended {count} conversation(s) that differed from the files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
