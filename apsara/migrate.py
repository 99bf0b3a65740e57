"""Copy a data folder into PostgreSQL: `python -m apsara.migrate [--data DIR] [--database URL]`.

For a move from one machine (files) to replicas (a database). Every conversation
is copied whole (its snapshot with its records folded in) and every stored file
with its bytes, streamed. It can be run again at any time: what the database
already holds unchanged is skipped, what changed in the folder since is copied
again, so an interrupted run resumes where it stopped. At the end it reads both
sides back and compares them (`--no-check` skips that); the exit status is 1 when
anything differs. Progress goes to stderr.

Stop the server on the folder first (or run it again after the last write).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import orjson

from .conversations.store import ConversationStore
from .files import FileStore


class Progress:
    """One line on stderr, rewritten in place: `label [#####.....] done/total`."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total, self.stream = label, total, stream or sys.stderr
        self.done, self._shown = 0, 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._shown >= 0.1 or self.done >= self.total:
            self._shown = now
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(f"\r{self.label:<14} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()

    def close(self) -> None:
        if self.done < self.total or self.total == 0:
            self.stream.write(f"\r{self.label:<14} {self.done}/{self.total}\n")
            self.stream.flush()


def _same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return False
    keys = ("conversation", "messages", "active")
    return all(orjson.dumps(a.get(k), option=orjson.OPT_SORT_KEYS) == orjson.dumps(b.get(k), option=orjson.OPT_SORT_KEYS)
               for k in keys)


def conversations_of(source: ConversationStore) -> list[tuple[str, str]]:
    if not source.history_dir.is_dir():
        return []
    found = []
    for folder in sorted(source.history_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            found += [(folder.name, cid) for cid in sorted(source.conversation_ids(folder.name))]
    return found


BATCH = 200  # conversations a transaction: fewer commits, and a stop loses at most one batch


def copy_conversations(source: ConversationStore, target, items) -> tuple[int, int]:
    copied = skipped = 0
    progress = Progress("conversations", len(items))
    copies: dict[str, dict[str, tuple]] = {}  # owner -> id -> (updated_at, seq) already in the database
    for start in range(0, len(items), BATCH):
        with target.db.transaction():
            for owner, conversation_id in items[start:start + BATCH]:
                if owner not in copies:
                    copies[owner] = target.versions(owner)
                document = source.read(owner, conversation_id)
                if document is None:  # deleted since the scan
                    progress.step()
                    continue
                mine = (document["conversation"].get("updated_at"), document.get("seq", 0))
                if copies[owner].get(conversation_id) == mine:
                    skipped += 1
                else:
                    with target.locked(owner, conversation_id):
                        target.write(owner, conversation_id, document)
                    copied += 1
                progress.step()
    progress.close()
    return copied, skipped


def files_of(source: FileStore) -> list[tuple[str, str]]:
    return [(owner, file_id) for owner in source.owners() for file_id in sorted(source.ids(owner))]


def copy_files(source: FileStore, target, items) -> tuple[int, int]:
    copied = skipped = 0
    progress = Progress("files", len(items))
    for owner, file_id in items:
        meta = source.get(owner, file_id)
        if meta is None or target.get(owner, file_id) is not None:
            skipped += meta is not None
        else:
            target.import_file(owner, meta, source.content(owner, file_id))
            copied += 1
        progress.step()
    progress.close()
    return copied, skipped


def check(source: ConversationStore, target, conversations, files: FileStore, target_files, file_items) -> list[str]:
    """What differs between the folder and the database (empty: a faithful copy)."""
    problems = []
    progress = Progress("checking", len(conversations) + len(file_items))
    for owner, conversation_id in conversations:
        mine = source.read(owner, conversation_id)
        if mine is not None and not _same(mine, target.read(owner, conversation_id)):
            problems.append(f"conversation {owner}/{conversation_id} differs")
        progress.step()
    for owner, file_id in file_items:
        meta = files.get(owner, file_id)
        copied = target_files.get(owner, file_id)
        if meta is not None:
            if copied is None or copied.get("sha256") != meta.get("sha256"):
                problems.append(f"file {owner}/{file_id} is missing")
            else:
                digest, size = hashlib.sha256(), 0
                with target_files.content(owner, file_id) as reader:
                    while chunk := reader.read(1024 * 1024):
                        digest.update(chunk)
                        size += len(chunk)
                if digest.hexdigest() != meta["sha256"] or size != meta["size_bytes"]:
                    problems.append(f"file {owner}/{file_id}: its bytes differ")
        progress.step()
    progress.close()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("APSARA_DATA_DIR") or "data",
                        help="the data folder to copy (default: APSARA_DATA_DIR or ./data)")
    parser.add_argument("--database", default=os.environ.get("APSARA_DATABASE_URL"),
                        help="postgresql://... (default: APSARA_DATABASE_URL)")
    parser.add_argument("--no-check", action="store_true", help="skip reading everything back at the end")
    args = parser.parse_args(argv)
    if not args.database or not args.database.startswith(("postgresql://", "postgres://")):
        parser.error("give the database as --database postgresql://... or APSARA_DATABASE_URL")
    data = Path(args.data)
    if not (data / "history").is_dir() and not (data / "files").is_dir():
        parser.error(f"{data} holds no history/ or files/ folder")

    from .database import Database
    from .database.conversations import PgConversationStore
    from .database.files import PgFileStore

    db = Database(args.database)
    source, target = ConversationStore(data), PgConversationStore(db)
    files, target_files = FileStore(data, "unused"), PgFileStore(db, data, "unused")
    started = time.monotonic()
    conversations, file_items = conversations_of(source), files_of(files)
    copied, skipped = copy_conversations(source, target, conversations)
    files_copied, files_skipped = copy_files(files, target_files, file_items)
    took = time.monotonic() - started
    print(f"conversations: {copied} copied, {skipped} already there; files: {files_copied} copied, "
          f"{files_skipped} already there ({took:.1f} s)")
    if args.no_check:
        return 0
    problems = check(source, target, conversations, files, target_files, file_items)
    for problem in problems:
        print(problem)
    print("check: the database holds everything the folder does" if not problems
          else f"check: {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
