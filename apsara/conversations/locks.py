"""Who may write a conversation: one writer at a time, across worker processes and threads.

`locked()` takes an exclusive `flock` on the conversation's lock file. flock works
across worker processes and threads (each call opens its own descriptor), and the
kernel drops it when a process dies, so a crash never leaves it held. Writers of
the same process queue first on a lock of their own. Readers never take the lock:
they only ask (`no_writer()`) whether a writer holds it, to know if bytes after
the last mark are still landing. No lock file is left for a conversation that is
not there.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Callable

LOCK_TIMEOUT_S = 30.0


class LockTimeout(RuntimeError):
    """A conversation stayed locked longer than a request should wait."""


class Missing(LookupError):
    """The conversation's file is not there (never made, or deleted)."""


def flock_waiting(fd: int, timeout_s: float) -> None:
    """An exclusive flock, waited for without blocking the process (LockTimeout after
    `timeout_s`): under gevent a blocking flock would freeze every greenlet of the worker,
    including the one holding the lock. time.sleep yields to them (gevent patches it) and
    simply waits under threads."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout() from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class ConversationLocks:
    def __init__(self, lock_path: Callable[[str, str], Path], exists: Callable[[str, str], bool]):
        self._lock_path = lock_path  # (owner, conversation id) -> its lock file
        self._exists = exists  # (owner, conversation id) -> whether its file is there
        # (owner, conversation id) -> the thread (greenlet) holding its lock in this process
        self._holders: dict[tuple[str, str], int] = {}
        # (owner, conversation id) -> [this process's lock of it, how many hold or wait for it]
        self._local_locks: dict[tuple[str, str], list] = {}
        self._local_guard = threading.Lock()

    @contextlib.contextmanager
    def locked(self, owner: str, conversation_id: str, timeout_s: float = LOCK_TIMEOUT_S,
               existing: bool = False):
        """Hold the conversation's lock. `existing`: only for a conversation that is
        there (else Missing, and no lock file is left behind)."""
        lock_path = self._lock_path(owner, conversation_id)
        if existing and not self._exists(owner, conversation_id):
            raise Missing(conversation_id)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        with self._in_process(owner, conversation_id, deadline):
            with self._flocked(owner, conversation_id, lock_path, deadline, existing):
                yield

    @contextlib.contextmanager
    def _in_process(self, owner: str, conversation_id: str, deadline: float):
        """This process's own writers of a conversation queue on a lock of its own: the next
        one goes the moment the last lets go, where waiting on the file's lock would poll (a
        reply that ended within milliseconds of its turn's commit waited 1-3 ms for it)."""
        key = (owner, conversation_id)
        with self._local_guard:
            entry = self._local_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            if not entry[0].acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise LockTimeout()
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._local_guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._local_locks[key]

    @contextlib.contextmanager
    def _flocked(self, owner: str, conversation_id: str, lock_path: Path, deadline: float, existing: bool):
        """The conversation's lock between processes: an flock on its lock file."""
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                flock_waiting(fd, max(0.0, deadline - time.monotonic()))
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)  # a delete removed this lock file while we waited: take the new one
        key = (owner, conversation_id)
        self._holders[key] = threading.get_ident()  # its own reads take every whole record
        try:
            if existing and not self._exists(owner, conversation_id):
                raise Missing(conversation_id)  # deleted while we waited
            yield
        finally:
            self._holders.pop(key, None)
            if not self._exists(owner, conversation_id):
                self._drop_lock_file(lock_path)  # no conversation, no lock file left behind
            os.close(fd)  # closing the descriptor releases the lock

    @staticmethod
    def _drop_lock_file(lock_path: Path) -> None:
        # Safe while held: a waiter on the old file sees its inode is gone and retries.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)

    @contextlib.contextmanager
    def no_writer(self, owner: str, conversation_id: str):
        """True while no other writer holds the conversation's lock (none can take it before
        the block ends), False while one does. A reader holding the lock itself is the writer."""
        if self._holders.get((owner, conversation_id)) == threading.get_ident():
            yield True
            return
        try:  # never created here: a reader leaves no lock file, and needs no right to write
            fd = os.open(self._lock_path(owner, conversation_id), os.O_RDONLY)
        except OSError:  # no lock file (nobody ever wrote), or one this reader may not open
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)
