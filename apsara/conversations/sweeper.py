"""Deleting temporary conversations once they have been quiet for APSARA_TEMPORARY_TTL_H hours.

Every worker process runs a sweeper thread while the server runs; each round
it tries a non-blocking `flock` on one lock file, so one worker sweeps at a
time and the others skip that round. The store names the candidates (the file
store from its search index); each is checked again under its own lock before
it is deleted, so a message that arrived since keeps it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .manager import ConversationManager

log = logging.getLogger("apsara.sweeper")


class TemporarySweeper:
    def __init__(self, manager: ConversationManager, lock_path: Path, ttl_h: float):
        self.manager = manager
        self.lock_path = lock_path
        self.ttl_h = ttl_h

    def sweep(self) -> int:
        """One round: delete what has expired, unless another process is sweeping. Returns how many."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker is sweeping
            cutoff = datetime.now(timezone.utc) - timedelta(hours=self.ttl_h)
            cutoff_iso = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            cutoff_ns = int(cutoff.timestamp() * 1000) * 1_000_000
            deleted = 0
            for owner, conversation_id in self.manager.store.expired_temporary(cutoff_ns):
                deleted += self.manager.delete_expired(owner, conversation_id, cutoff_iso)
            if deleted:
                log.info("deleted %d temporary conversation(s)", deleted)
            return deleted
        finally:
            os.close(fd)

    def start(self, every_s: float) -> threading.Thread:
        """Sweep every `every_s` seconds in a daemon thread, for as long as the manager is in use."""
        manager_ref = weakref.ref(self.manager)
        lock_path, ttl_h = self.lock_path, self.ttl_h
        del self  # the thread must not keep the app alive: it stops once the app is gone

        def run():
            while True:
                time.sleep(every_s)
                manager = manager_ref()
                if manager is None:
                    return
                try:
                    TemporarySweeper(manager, lock_path, ttl_h).sweep()
                except Exception:  # a bad round must not end the sweeping
                    log.exception("sweeping temporary conversations failed")
                del manager

        thread = threading.Thread(target=run, name="apsara-temporary-sweep", daemon=True)
        thread.start()
        return thread
