"""Conversations in PostgreSQL: the same snapshot-plus-records model as the files.

A row of `conversations` holds the snapshot (the document as of `snapshot_seq`),
the current header for listings, and `updated_ns` for the newest-first index;
`conversation_records` holds the records appended since, one row each (see
journal.py). The interface is the file store's (store.py), so nothing above it
knows which one runs:

- `locked()` is a transaction holding a transaction-level advisory lock keyed by
  (owner, id): one writer per conversation across every replica, released by the
  server when the transaction ends or the connection dies. Everything a store
  method writes inside it commits together, so a change is all there or absent.
- a read position is `(generation, seq)`: `follow()` gives the records after
  `seq`, or (None, None) once the snapshot was rewritten (generation moved on).
  A new row starts at a random generation, so a conversation deleted and made
  again under its id never meets a position of the old one.
- each worker keeps the conversations it read lately and brings one up to date
  with the records after its position, in one query (`follow()`), as the file
  store does with the bytes appended since: a turn does not fetch and parse the
  whole snapshot of a long conversation, and the turn memos find the very
  message dicts they kept.
- `append(sync=False)` (checkpoints, stop requests) commits without waiting for
  the WAL flush: a crash of the database may lose the last ones, as the file
  store's page cache may.
"""
from __future__ import annotations

import contextlib
import secrets

import orjson
import psycopg

from ..conversations.filters import ListFilters
from ..conversations.journal import TOUCHING, replay
from ..conversations.locks import LOCK_TIMEOUT_S, LockTimeout, Missing
from ..conversations.store import CACHED_CONVERSATIONS, COMPACT_MIN_BYTES, check_id, iso_to_ns, reader_copy
from ..conversations.tree import MessageTree
from ..recent import Recent
from ..search import message_text, snippet, words_of
from . import Database, stops

_LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def _records(seqs, bodies) -> list[dict]:
    """Record rows as the journal's records: the row's number is the record's `seq`."""
    records = []
    for seq, body in zip(seqs or (), bodies or ()):
        rec = orjson.loads(body)
        rec["seq"] = seq
        records.append(rec)
    return records


def _document(snapshot: bytes, records: list[dict]) -> dict:
    document = orjson.loads(snapshot)
    if records:
        replay(document, records)
    return document


def _snapshot(document: dict) -> bytes:
    return orjson.dumps({"conversation": document["conversation"], "messages": document.get("messages", []),
                         "active": document.get("active", {}), "seq": document.get("seq", 0)})


FLAGS = ("archived", "pinned", "temporary")


def _flags_match(table: str = "") -> str:
    """The listing's rule (see conversations/filters.py) on the flags' columns, kept from the
    header by write() and append(): casting the header to jsonb failed on a \\u0000 in a title."""
    return f" AND {table}archived = %s AND {table}temporary = %s AND (NOT %s OR {table}pinned)"


def _flag_args(filters: ListFilters) -> list[bool]:
    return [filters.archived, filters.temporary, filters.pinned]


def _flags_of(header: dict | None) -> dict:
    """The columns' values from a header; None (unchanged) without one."""
    return {flag: (bool(header.get(flag)) if header is not None else None) for flag in FLAGS}


# PostgreSQL's tsvector holds at most 1 MB: a text longer than this is indexed as its
# distinct words, in order, as many as fit (the search matches words, not phrases).
MAX_INDEXED_CHARS = 256 * 1024


def _indexed(text: str) -> str:
    text = text.replace("\x00", "")  # PostgreSQL's text refuses NUL
    if len(text) > MAX_INDEXED_CHARS:
        text = " ".join(dict.fromkeys(text.split()))[:MAX_INDEXED_CHARS]
    return text


def _add_texts(conn, owner: str, conversation_id: str, kind: str, texts: list[str]) -> None:
    rows = [(owner, conversation_id, kind, _indexed(text)) for text in texts if text]
    if rows:
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO search_texts (owner, conversation_id, kind, body) "
                               "VALUES (%s, %s, %s, %s)", rows)


def _index_records(conn, owner: str, conversation_id: str, records: list[dict]) -> None:
    """New messages add their texts; a changed header replaces the title's."""
    for rec in records:
        if rec["type"] == "message":
            _add_texts(conn, owner, conversation_id, "message", [message_text(rec["message"])])
        elif rec["type"] == "conversation":
            conn.execute("DELETE FROM search_texts WHERE owner = %s AND conversation_id = %s AND kind = 'title'",
                         (owner, conversation_id))
            _add_texts(conn, owner, conversation_id, "title", [rec["conversation"].get("title") or ""])


class PgConversationStore:
    # Failures of a write that a later try may get through: the database away, a lock held too long.
    transient_errors = (psycopg.OperationalError, LockTimeout)

    def __init__(self, db: Database):
        self.db = db
        self.stops = stops.StopListener(db.url)
        # (owner, id) -> (document, position): conversations this process read lately
        self._cache = Recent(CACHED_CONVERSATIONS)

    @property
    def stop_poll_s(self) -> float:
        """How often a running reply asks for a stop request: rarely while stops are told
        (stops.py), else well within the second promised."""
        return stops.ASK_LISTENING_S if self.stops.listening else stops.ASK_S

    def listen_for_stops(self, on_stop, wanted) -> None:
        """Stop requests and deletions written by any replica, told to `on_stop(owner,
        conversation_id, reply_id or None)` as they commit, until `wanted()` is false."""
        self.stops.run(on_stop, wanted)

    # -- locking ---------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, owner: str, conversation_id: str, timeout_s: float = LOCK_TIMEOUT_S,
               existing: bool = False):
        key = f"{check_id(owner)}/{check_id(conversation_id)}"
        with self.db.transaction() as conn:
            try:
                # One round trip: a bounded wait for the lock, then whether the conversation is there.
                there = conn.execute(
                    "SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(hashtextextended(%s, 0)), "
                    "EXISTS (SELECT 1 FROM conversations WHERE owner = %s AND id = %s)",
                    (f"{int(timeout_s * 1000)}ms", key, owner, conversation_id)).fetchone()[2]
            except psycopg.errors.LockNotAvailable:
                raise LockTimeout() from None
            if existing and not there:
                raise Missing(conversation_id)
            yield

    # -- reading ---------------------------------------------------------------
    def exists(self, owner: str, conversation_id: str) -> bool:
        with self.db.connection() as conn:
            return conn.execute("SELECT 1 FROM conversations WHERE owner = %s AND id = %s",
                                (check_id(owner), check_id(conversation_id))).fetchone() is not None

    def read(self, owner: str, conversation_id: str) -> dict | None:
        loaded = self.load(owner, conversation_id)
        return loaded[0] if loaded else None

    def load(self, owner: str, conversation_id: str):
        """(document, position) or None. A conversation read before by this process is
        brought up to date with the records after its position; the document's containers
        are its own, its message dicts may be shared with the cache (as the file store's)."""
        key = (check_id(owner), check_id(conversation_id))
        # Inside a transaction of ours (under `locked()`) reads see its own records, which may
        # yet be rolled back: kept only what every reader may see, what was committed.
        committed = not self.db.in_transaction()
        cached = self._cache.get(key)
        if cached is not None:
            document, position = cached
            records, position = self._records_after(owner, conversation_id, position)
            if position is not None:  # the same snapshot: only what was appended since
                document = reader_copy(document)
                if records:
                    replay(document, records)
                    if committed:
                        self._remember(key, document, position)
                    return reader_copy(document), position
                return document, position
        loaded = self._load_whole(owner, conversation_id)
        if loaded is None:
            self._cache.forget(key)
            return None
        if committed:
            self._remember(key, *loaded)
        return reader_copy(loaded[0]), loaded[1]

    def _remember(self, key: tuple[str, str], document: dict, position) -> None:
        MessageTree.of(document).path_length()  # walked once here; each later read gets a copy of what it found
        self._cache.put(key, (document, position))

    def _load_whole(self, owner: str, conversation_id: str):
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT c.snapshot, c.generation, c.seq, r.seqs, r.bodies FROM conversations c, LATERAL ("
                " SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(body ORDER BY seq) AS bodies"
                " FROM conversation_records WHERE owner = c.owner AND conversation_id = c.id"
                " AND seq > c.snapshot_seq) r WHERE c.owner = %s AND c.id = %s",
                (check_id(owner), check_id(conversation_id))).fetchone()
        if row is None:
            return None
        snapshot, generation, seq, seqs, bodies = row
        return _document(snapshot, _records(seqs, bodies)), (generation, seq)

    def follow(self, owner: str, conversation_id: str, position):
        """Records appended since `position`: (records, new position), or (None, None)
        when the snapshot was rewritten or the conversation deleted: read it again whole."""
        return self._records_after(owner, conversation_id, position)

    def _records_after(self, owner: str, conversation_id: str, position):
        # follow()'s query, which load() shares without being a reply's follow() itself
        generation, seq = position
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT c.generation, r.seqs, r.bodies FROM conversations c, LATERAL ("
                " SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(body ORDER BY seq) AS bodies"
                " FROM conversation_records WHERE owner = c.owner AND conversation_id = c.id AND seq > %s) r "
                "WHERE c.owner = %s AND c.id = %s",
                (seq, check_id(owner), check_id(conversation_id))).fetchone()
        if row is None or row[0] != generation:
            return None, None
        records = _records(row[1], row[2])
        return records, (generation, records[-1]["seq"] if records else seq)

    def may_have_news(self, owner: str, conversation_id: str, position) -> bool:
        return True  # follow() asks in one query anyway

    def conversation_ids(self, owner: str) -> list[str]:
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM conversations WHERE owner = %s", (owner,))]

    def versions(self, owner: str) -> dict[str, tuple[str, int]]:
        """id -> (updated_at, seq) of each of the owner's conversations: what a copy compares."""
        with self.db.connection() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(
                "SELECT id, updated_at, seq FROM conversations WHERE owner = %s", (owner,))}

    def read_header(self, owner: str, conversation_id: str) -> dict | None:
        with self.db.connection() as conn:
            row = conn.execute("SELECT header, updated_at, message_count FROM conversations "
                               "WHERE owner = %s AND id = %s", (check_id(owner), check_id(conversation_id))).fetchone()
        return None if row is None else {**orjson.loads(row[0]), "updated_at": row[1], "message_count": row[2]}

    def list_headers(self, owner: str, limit: int, after: tuple[int, str] | None = None,
                     filters: ListFilters = ListFilters()):
        """Newest first, ties by id, those the filters accept; `after` is the (updated_ns, id) of the last item seen."""
        where, args = "owner = %s" + _flags_match(), [check_id(owner), *_flag_args(filters)]
        if after is not None:
            where += " AND (updated_ns < %s OR (updated_ns = %s AND id > %s))"
            args += [after[0], after[0], after[1]]
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT id, header, updated_at, message_count, updated_ns FROM conversations "
                                f"WHERE {where} ORDER BY updated_ns DESC, id LIMIT %s", (*args, limit + 1)).fetchall()
        headers = [{**orjson.loads(r[1]), "updated_at": r[2], "message_count": r[3]} for r in rows[:limit]]
        more = len(rows) > limit
        return headers, ((rows[limit - 1][4], rows[limit - 1][0]) if more and limit else None)

    # -- writing ---------------------------------------------------------------
    def write(self, owner: str, conversation_id: str, document: dict) -> None:
        """Replace the snapshot with `document` (records up to its seq are folded in)."""
        header = document["conversation"]
        snapshot = _snapshot(document)
        seq = document.get("seq", 0)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM conversation_records WHERE owner = %s AND conversation_id = %s",
                         (check_id(owner), check_id(conversation_id)))
            conn.execute(
                "INSERT INTO conversations (owner, id, snapshot, snapshot_seq, generation, seq, record_bytes, header, "
                " updated_at, updated_ns, message_count, archived, pinned, temporary) "
                "VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (owner, id) DO UPDATE SET snapshot = EXCLUDED.snapshot, "
                " snapshot_seq = EXCLUDED.snapshot_seq, generation = conversations.generation + 1, "
                " seq = EXCLUDED.seq, record_bytes = 0, header = EXCLUDED.header, updated_at = EXCLUDED.updated_at, "
                " updated_ns = EXCLUDED.updated_ns, message_count = EXCLUDED.message_count, "
                " archived = EXCLUDED.archived, pinned = EXCLUDED.pinned, temporary = EXCLUDED.temporary",
                (owner, conversation_id, snapshot, seq, secrets.randbits(62), seq, orjson.dumps(header),
                 header["updated_at"], iso_to_ns(header["updated_at"]), header.get("message_count", 0),
                 *_flags_of(header).values()))
            conn.execute("DELETE FROM search_texts WHERE owner = %s AND conversation_id = %s",
                         (owner, conversation_id))
            _add_texts(conn, owner, conversation_id, "title", [header.get("title") or ""])
            _add_texts(conn, owner, conversation_id, "message",
                       [message_text(m) for m in document.get("messages", ())])

    def append(self, owner: str, conversation_id: str, records: list[dict], *, message_count: int | None = None,
               sync: bool = True, on_written=None, reply_texts: dict[str, str] | None = None) -> dict:
        """Append records (numbered here, as the row's seq); call inside `locked()`. Returns a
        mark with `size` and `base`, as the file store's, for `needs_compaction()`.

        One statement: the row takes the next numbers and the records go in with them."""
        bodies, header, flags, touched = [], None, _flags_of(None), None
        for rec in records:
            rec.pop("seq", None)
            bodies.append(orjson.dumps(rec))
            if rec["type"] == "conversation":
                header, flags = orjson.dumps(rec["conversation"]), _flags_of(rec["conversation"])
            if rec["type"] in TOUCHING:
                touched = max(touched or "", rec["at"])
        with self.db.transaction() as conn:
            row = conn.execute(
                "WITH c AS (UPDATE conversations SET seq = seq + %(n)s, record_bytes = record_bytes + %(bytes)s, "
                "  updated_at = GREATEST(updated_at, %(touched)s), updated_ns = GREATEST(updated_ns, %(touched_ns)s), "
                "  message_count = COALESCE(%(count)s, message_count), header = COALESCE(%(header)s, header), "
                "  archived = COALESCE(%(archived)s, archived), pinned = COALESCE(%(pinned)s, pinned), "
                "  temporary = COALESCE(%(temporary)s, temporary) "
                "  WHERE owner = %(owner)s AND id = %(id)s "
                "  RETURNING seq, updated_at, message_count, record_bytes, length(snapshot) AS base, generation), "
                " added AS (INSERT INTO conversation_records (owner, conversation_id, seq, body) "
                "  SELECT %(owner)s, %(id)s, c.seq - %(n)s + r.n, r.body "
                "  FROM c, unnest(%(bodies)s::bytea[]) WITH ORDINALITY AS r(body, n)) "
                "SELECT c.*, set_config('synchronous_commit', %(commit)s, true) FROM c",
                {"n": len(bodies), "bytes": sum(map(len, bodies)), "touched": touched,
                 "touched_ns": iso_to_ns(touched) if touched else None, "count": message_count,
                 "header": header, "owner": check_id(owner), "id": check_id(conversation_id),
                 "bodies": bodies, "commit": "on" if sync else "off", **flags}).fetchone()
            if row is None:
                raise Missing(conversation_id)
            seq, updated_at, count, record_bytes, base, generation = row[:6]
            for number, rec in enumerate(records, start=seq - len(records) + 1):
                rec["seq"] = number
            _index_records(conn, owner, conversation_id, records)
            for rec in records:
                if rec["type"] == "stop":
                    stops.notify(conn, owner, conversation_id, rec["id"])
            if on_written is not None:
                on_written()
        ended = [rec["id"] for rec in records if rec["type"] == "reply"]
        if ended:  # a reply's text came in many records: index it whole once it ended
            texts = [reply_texts[i] for i in ended if i in (reply_texts or {})]
            missing = set(ended) - set(reply_texts or {})
            if missing:  # the caller did not have them: read them back
                document = self.read(owner, conversation_id) or {}
                texts += [message_text(m) for m in document.get("messages", ()) if m["id"] in missing]
            with self.db.connection() as conn:
                _add_texts(conn, owner, conversation_id, "message", texts)
        return {"seq": seq, "updated_at": updated_at, "message_count": count, "base": base,
                "size": base + record_bytes, "position": (generation, seq),
                "began_at": (generation, seq - len(records))}

    @staticmethod
    def needs_compaction(mark: dict) -> bool:
        base = mark.get("base", 0)
        return mark.get("size", 0) - base > max(COMPACT_MIN_BYTES, base)

    def delete(self, owner: str, conversation_id: str) -> bool:
        self._cache.forget((check_id(owner), check_id(conversation_id)))
        with self.db.transaction() as conn:
            deleted = conn.execute("DELETE FROM conversations WHERE owner = %s AND id = %s",
                                   (check_id(owner), check_id(conversation_id))).rowcount > 0
            if deleted:  # nobody can see its replies now: any replica running one stops it
                stops.notify(conn, owner, conversation_id)
            return deleted

    def sweep_temp_files(self, older_than_s: float = 600.0) -> int:
        return 0  # a transaction leaves nothing half-written behind

    # -- search and the temporary sweep ---------------------------------------------
    def search(self, owner: str, query: str, limit: int, after: tuple[int, str] | None = None,
               filters: ListFilters = ListFilters()) -> list[tuple[dict, str, tuple[int, str]]]:
        """(header, snippet, position) of the conversations with one text holding every word, newest first."""
        words = words_of(query)
        if not words:
            return []
        where, args = "c.owner = %s" + _flags_match("c."), [check_id(owner), *_flag_args(filters)]
        if after is not None:
            where += " AND (c.updated_ns < %s OR (c.updated_ns = %s AND c.id > %s))"
            args += [after[0], after[0], after[1]]
        # 'simple': whole words, lower-cased, no stemming, as the file store's index matches.
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT c.id, c.header, c.updated_at, c.message_count, c.updated_ns, "
                " (SELECT t.body FROM search_texts t WHERE t.owner = c.owner AND t.conversation_id = c.id "
                "  AND t.words @@ q ORDER BY t.kind = 'title' DESC LIMIT 1) "
                f"FROM conversations c, plainto_tsquery('simple', %s) q WHERE {where} AND EXISTS ("
                " SELECT 1 FROM search_texts t WHERE t.owner = c.owner AND t.conversation_id = c.id "
                " AND t.words @@ q) ORDER BY c.updated_ns DESC, c.id LIMIT %s",
                (" ".join(words), *args, limit)).fetchall()
        return [({**orjson.loads(r[1]), "updated_at": r[2], "message_count": r[3]}, snippet(r[5] or "", words),
                 (r[4], r[0])) for r in rows]

    def expired_temporary(self, cutoff_ns: int) -> list[tuple[str, str]]:
        """(owner, id) of temporary conversations with no activity since `cutoff_ns`."""
        with self.db.connection() as conn:
            rows = conn.execute("SELECT owner, id FROM conversations WHERE updated_ns < %s AND temporary",
                                (cutoff_ns,)).fetchall()
        return [(owner, cid) for owner, cid in rows]

    def check_search_index(self) -> int:
        return 0  # the texts change in the same transactions as the conversations: nothing can drift

    def is_writable(self) -> bool:
        return self.db.ping()
