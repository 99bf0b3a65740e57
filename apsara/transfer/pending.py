"""Imports under way, written down before their first conversation is stored.

An import stores its conversations one by one. A worker killed part way would leave
some of them stored and its client told nothing, and the client's retry would store
them twice. So an import first writes down, in one entry, the ids it is about to store
and who is storing them (a writer, as a reply's: writers.py), and marks each
conversation it stores with the entry's token. It crosses the entry out once every
conversation is stored, or taken back after a failure. An entry whose writer died
belongs to an import that never ended: whichever process finds it takes back the
conversations that bear its mark (Transfers.take_back_abandoned), and only those: an
id written down but never stored may since be someone else's.

The files such an import had restored are then referenced by nothing, and go with the
next `python -m apsara.cleanup`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import orjson

from ..durable import fsync_dir, write_atomically

log = logging.getLogger("apsara.imports")


class PendingImportFiles:
    """Entries as files: `<data>/imports/<token>.json`, each written whole or not at all."""

    def __init__(self, data_dir: Path):
        self.folder = Path(data_dir) / "imports"

    def write(self, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{entry['token']}.json", orjson.dumps(entry))

    def remove(self, token: str) -> bool:
        """Cross the entry out; False if it was not there (taken back by another process)."""
        try:
            (self.folder / f"{token}.json").unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.folder)
        return True

    def entries(self) -> list[dict]:
        try:
            names = sorted(p for p in self.folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return []
        found = []
        for path in names:
            try:
                found.append(orjson.loads(path.read_bytes()))
            except FileNotFoundError:
                continue  # its import ended meanwhile
            except ValueError:
                log.error("pending import %s cannot be read; left alone", path.name)
        return found


class PendingImportRows:
    """Entries as rows of `pending_imports`, for the replicas sharing a database."""

    def __init__(self, db):
        self.db = db

    def write(self, entry: dict) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO pending_imports (token, entry) VALUES (%s, %s) "
                         "ON CONFLICT (token) DO UPDATE SET entry = EXCLUDED.entry",
                         (entry["token"], orjson.dumps(entry)))

    def remove(self, token: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM pending_imports WHERE token = %s", (token,)).rowcount > 0

    def entries(self) -> list[dict]:
        with self.db.connection() as conn:
            return [orjson.loads(row[0]) for row in conn.execute("SELECT entry FROM pending_imports ORDER BY token")]
