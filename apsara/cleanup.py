"""Remove stored files that no conversation refers to.

`python -m apsara.cleanup [--dry-run] [--grace-hours 24]`. A file is kept while
any version of any message of its owner's conversations names it, and for a
grace period after upload (it may be about to be attached). Deleting a
conversation never deletes files; this does, later.
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime

from .config import from_env
from .files import FileStore
from .stores import open_stores


def referenced(store, owner: str) -> set[str]:
    ids: set[str] = set()
    for conversation_id in store.conversation_ids(owner):
        document = store.read(owner, conversation_id) or {}
        for message in document.get("messages", []):
            ids.update(p["file_id"] for p in message.get("parts", []) if p.get("type") == "file")
    return ids


def unreferenced(store, files: FileStore, grace_s: float) -> list[tuple[str, str]]:
    found = []
    cutoff = time.time() - grace_s
    for owner in files.owners():
        keep = referenced(store, owner)
        for file_id in files.ids(owner):
            meta = files.get(owner, file_id) or {}
            created = datetime.fromisoformat(meta.get("created_at", "1970-01-01T00:00:00Z").replace("Z", "+00:00"))
            if file_id not in keep and created.timestamp() < cutoff:
                found.append((owner, file_id))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    parser.add_argument("--grace-hours", type=float, default=24.0)
    args = parser.parse_args(argv)
    settings = from_env()
    stores = open_stores(settings)
    store, files = stores.conversations, stores.files
    doomed = unreferenced(store, files, args.grace_hours * 3600)
    for owner, file_id in doomed:
        print(f"{'would remove' if args.dry_run else 'removed'} {owner}/{file_id}")
        if not args.dry_run:
            files.delete(owner, file_id)
    print(f"{len(doomed)} unreferenced file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
