"""Stored files in PostgreSQL: metadata rows, and the bytes as 1 MB rows of `file_chunks`.

Uploads still arrive in the replica's own `<data>/files/.incoming/` (the multipart
parser writes there, never to memory); `adopt()` then copies the temp file into
chunk rows one chunk at a time, in the transaction that adds the metadata row, so
a replica killed mid-copy leaves nothing. Reading is streamed the same way:
`content()` gives a seekable reader that holds one chunk at a time.

A file's mark of use (see files.py) is `used_until` in its metadata, and the
cleanup's look at it and removal are one transaction holding the row's lock, as
an attach's is: one of the two comes wholly first.
"""
from __future__ import annotations

import io
import time
from datetime import datetime
from pathlib import Path

import orjson

from ..conversations.store import InvalidId, check_id
from ..files import FileStore, examine, generated_meta
from . import Database
from .shared import file_url_key

CHUNK = 1024 * 1024


class ChunkReader(io.RawIOBase):
    """A file's bytes read from their chunk rows, one row in memory at a time."""

    def __init__(self, db: Database, owner: str, file_id: str, size: int):
        self._db, self._owner, self._file_id, self._size = db, owner, file_id, size
        self._pos = 0
        self._chunk_no, self._chunk = -1, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._size:
            return 0
        number, start = divmod(self._pos, CHUNK)
        if number != self._chunk_no:
            with self._db.connection() as conn:
                row = conn.execute("SELECT data FROM file_chunks WHERE owner = %s AND file_id = %s AND n = %s",
                                   (self._owner, self._file_id, number)).fetchone()
            self._chunk_no, self._chunk = number, (row[0] if row else b"")
        piece = self._chunk[start:start + len(buffer)]
        if not piece:
            return 0
        buffer[:len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


class PgFileStore(FileStore):
    """The file store's interface (signed URLs and all), keeping files in the database."""

    def __init__(self, db: Database, data_dir: Path, secret_key: str, url_ttl_s: int = 3600,
                 public_url: str | None = None, sweep_every_s: float = 600.0):
        super().__init__(data_dir, secret_key, url_ttl_s, public_url, sweep_every_s)
        self.db = db

    def _signature(self, owner: str, file_id: str, expires: int) -> str:
        # No key given: the replicas' shared one, read on first use rather than at start, so a
        # worker that started while the database was away gets it once the database is back.
        if not self._secret:
            self._secret = file_url_key(self.db).encode()
        return super()._signature(owner, file_id, expires)

    def _put(self, owner: str, meta: dict, chunks) -> None:
        with self.db.transaction() as conn, conn.cursor() as cur:
            for number, data in enumerate(chunks):
                cur.execute("INSERT INTO file_chunks (owner, file_id, n, data) VALUES (%s, %s, %s, %s)",
                            (owner, meta["id"], number, data))
            cur.execute("INSERT INTO files (owner, id, meta) VALUES (%s, %s, %s)",
                        (owner, meta["id"], orjson.dumps(meta)))

    def adopt(self, owner: str, temp_path: Path, filename: str) -> dict:
        check_id(owner)
        meta = examine(temp_path, filename)

        def chunks():
            with open(temp_path, "rb") as fh:
                while data := fh.read(CHUNK):
                    yield data

        self._put(owner, meta, chunks())
        temp_path.unlink(missing_ok=True)
        return meta

    def import_file(self, owner: str, meta: dict, source) -> None:
        """Keep a file from another store as it is (its id and metadata): `source` a path or a reader."""
        check_id(owner)
        check_id(meta["id"])

        def chunks():
            with (open(source, "rb") if isinstance(source, Path) else source) as fh:
                while data := fh.read(CHUNK):
                    yield data

        self._put(owner, meta, chunks())

    def save_bytes(self, owner: str, data: bytes, mime_type: str, filename: str) -> dict:
        check_id(owner)
        meta = generated_meta(data, mime_type, filename)
        self._keep_restored(owner, meta, data)  # made for a message on its way, as a restored one is
        return meta

    def _keep_restored(self, owner: str, meta: dict, data: bytes) -> None:
        self._put(owner, self._in_use(meta), (data[i:i + CHUNK] for i in range(0, len(data), CHUNK)))

    def _in_use(self, meta: dict) -> dict:
        """The metadata marked in use for IN_USE_S: a message naming the file is on its way."""
        return {**meta, "used_until": time.time() + self.IN_USE_S}

    def attach(self, owner: str, file_id: str) -> dict | None:
        try:
            check_id(owner)
            check_id(file_id)
        except InvalidId:
            return None
        return self._change_meta(owner, file_id, self._in_use)

    @staticmethod
    def _meta_for_update(conn, owner: str, file_id: str) -> dict | None:
        """A file's metadata, its row locked until the transaction ends (None: not there)."""
        row = conn.execute("SELECT meta FROM files WHERE owner = %s AND id = %s FOR UPDATE",
                           (owner, file_id)).fetchone()
        return orjson.loads(row[0]) if row is not None else None

    def _change_meta(self, owner: str, file_id: str, change) -> dict | None:
        """Replace a file's metadata with `change(meta)` under its row lock; None when it is not there."""
        with self.db.transaction() as conn:
            meta = self._meta_for_update(conn, owner, file_id)
            if meta is None:
                return None
            meta = change(meta)
            conn.execute("UPDATE files SET meta = %s WHERE owner = %s AND id = %s",
                         (orjson.dumps(meta), owner, file_id))
        return meta

    @staticmethod
    def _last_used(meta: dict) -> float:
        created = datetime.fromisoformat(meta.get("created_at", "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
        return max(created.timestamp(), meta.get("used_until", 0.0))

    def last_used(self, owner: str, file_id: str) -> float | None:
        meta = self.get(owner, file_id)
        return None if meta is None else self._last_used(meta)

    def remove_if_unused(self, owner: str, file_id: str, since: float) -> bool:
        with self.db.transaction() as conn:
            meta = self._meta_for_update(conn, owner, file_id)
            if meta is None or self._last_used(meta) >= since:
                return False
            conn.execute("DELETE FROM files WHERE owner = %s AND id = %s", (owner, file_id))
            conn.execute("DELETE FROM file_chunks WHERE owner = %s AND file_id = %s", (owner, file_id))
        return True

    def set_gemini_ref(self, owner: str, file_id: str, ref: dict | None) -> None:
        def with_ref(meta: dict) -> dict:
            kept = {k: v for k, v in meta.items() if k != "gemini"}
            return kept if ref is None else {**kept, "gemini": ref}

        self._change_meta(owner, file_id, with_ref)

    def get(self, owner: str, file_id: str) -> dict | None:
        try:
            check_id(owner)
            check_id(file_id)
        except InvalidId:
            return None
        with self.db.connection() as conn:
            row = conn.execute("SELECT meta FROM files WHERE owner = %s AND id = %s", (owner, file_id)).fetchone()
        return orjson.loads(row[0]) if row else None

    def content(self, owner: str, file_id: str):
        meta = self.get(owner, file_id)
        return io.BufferedReader(ChunkReader(self.db, owner, file_id, meta["size_bytes"] if meta else 0), CHUNK)

    def read_bytes(self, owner: str, file_id: str) -> bytes:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT data FROM file_chunks WHERE owner = %s AND file_id = %s ORDER BY n",
                                (owner, file_id)).fetchall()
        return b"".join(r[0] for r in rows)

    def owners(self) -> list[str]:
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT owner FROM files ORDER BY owner")]

    def ids(self, owner: str) -> list[str]:
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM files WHERE owner = %s", (owner,))]

    def delete(self, owner: str, file_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM files WHERE owner = %s AND id = %s", (owner, file_id))
            conn.execute("DELETE FROM file_chunks WHERE owner = %s AND file_id = %s", (owner, file_id))
