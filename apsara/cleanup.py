"""Remove stored files that no conversation refers to.

`python -m apsara.cleanup [--dry-run] [--grace-hours 24]`. A file is kept while
any version of any message of its owner's conversations names it, and for a
grace period after it was last stored or attached (it may be about to be
attached, or a message naming it may be on its way). Deleting a conversation
never deletes files; this does, later.

Servers keep running meanwhile. A send attaches a file by marking it used under
its owner's files lock (FileStore.attach), and the removal looks at that mark
again under the same lock (FileStore.remove_if_unused), so a file attached after
the conversations were read is kept: the next run sees the message naming it.
"""
from __future__ import annotations

import argparse
import time

from .config import from_env
from .stores import open_stores


def referenced(store, owner: str) -> set[str]:
    ids: set[str] = set()
    for conversation_id in store.conversation_ids(owner):
        document = store.read(owner, conversation_id) or {}
        for message in document.get("messages", []):
            ids.update(p["file_id"] for p in message.get("parts", []) if p.get("type") == "file")
    return ids


def unreferenced(store, files, grace_s: float, now: float | None = None) -> list[tuple[str, str]]:
    """(owner, file id) of the files no message names and none used in the `grace_s` before `now`."""
    unused_since = (time.time() if now is None else now) - grace_s
    found = []
    for owner in files.owners():
        keep = referenced(store, owner)
        for file_id in files.ids(owner):
            used = files.last_used(owner, file_id)
            if file_id not in keep and used is not None and used < unused_since:
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
    # Taken before the conversations are read: a file attached after this moment is newer
    # than it, however long the reading takes.
    started = time.time()
    unused_since = started - args.grace_hours * 3600
    doomed = unreferenced(store, files, args.grace_hours * 3600, started)
    removed = 0
    for owner, file_id in doomed:
        if args.dry_run:
            print(f"would remove {owner}/{file_id}")
        elif files.remove_if_unused(owner, file_id, unused_since):
            print(f"removed {owner}/{file_id}")
            removed += 1
        else:
            print(f"kept {owner}/{file_id}: attached while this ran")
    print(f"{len(doomed)} unreferenced file(s)" + ("" if args.dry_run else f", {removed} removed"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
