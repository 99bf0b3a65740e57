"""Replies as jobs: they run in their own thread (greenlet under gevent), not in a request.

A `Job` holds a running reply's events in memory, numbered as its stream numbers
them, for every client of this process that follows it (the one that asked, and
any that re-attach). The process's `JobRegistry` tends its running jobs from one
watcher thread:

- checkpoints: events not yet on disk are appended as one `progress` record once
  the oldest of them is CHECKPOINT_S old, at most every CHECKPOINT_S (coalesced),
  and a heartbeat every HEARTBEAT_S while Gemini is silent, so other processes see
  the reply grow and know its writer lives; a killed process loses at most the
  last window. `reply_start` alone is not worth a write: the stored reply already
  says all it says (a burst of 200 streams wrote 200 of them as it waited for
  Gemini's first words);
- stop requests another process recorded in the conversation's file (a `stop`
  record), or the conversation's deletion, close the job's Gemini request
  within a watcher period.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from ..conversations.manager import ConversationManager
from ..conversations.writers import HEARTBEAT_S
from ..gemini.upstream import Upstream

log = logging.getLogger("apsara.jobs")

CHECKPOINT_S = 0.25
WATCH_PERIOD_S = 0.05
WATCHER_IDLE_S = 10.0


class Job:
    def __init__(self, owner: str, conversation_id: str | None, reply_id: str, first_event_id: int,
                 persist: bool = True):
        self.owner = owner
        self.conversation_id = conversation_id
        self.reply_id = reply_id
        self.persist = persist
        self.events: list[list] = []  # [id, name, data]; id 0: stored, never shown
        self._next_id = first_event_id
        self.cond = threading.Condition()
        self.ended = False
        self.upstream = Upstream()
        self.stop_requested = False
        # Checkpointing: events[:flushed] are on disk.
        self.flush_lock = threading.Lock()
        self.flushed = 0
        self.last_flush = time.monotonic()
        # When the oldest event not on disk that says something new was published (None: none).
        self.unflushed_since: float | None = None
        self.position: tuple[int, int] | None = None  # how far the watcher read the store
        self.stop_checked = 0.0
        self.result: tuple[str, dict] | None = None
        # The id of the error its followers were told while its end could not be stored yet
        # (tell_failure); that event is not the reply's, and is never stored.
        self.failure_told: int | None = None
        self.released = False  # out of the registry: its thread is done with it

    def publish(self, name: str, data, shown: bool = True) -> list:
        with self.cond:
            event_id = 0
            if shown:
                event_id, self._next_id = self._next_id, self._next_id + 1
            event = [event_id, name, data]
            self.events.append(event)
            if self.unflushed_since is None and name != "reply_start":
                self.unflushed_since = time.monotonic()
            self.cond.notify_all()
        return event

    def publish_while_running(self, name: str, data) -> bool:
        """Publish an event from outside the reply's thread (an automatic title), only while the
        reply has not ended. flush_lock: the ending takes its event id under it."""
        with self.flush_lock:
            if self.ended:
                return False
            self.publish(name, data)
            return True

    def next_id(self) -> int:
        with self.cond:
            return self._next_id

    def end(self, name: str, data: dict, event_id: int) -> None:
        """The last event (done or error, with the stored reply), then the end."""
        with self.cond:
            self.events.append([event_id, name, data])
            self._next_id = event_id + 1
            self.result = (name, data)
            self.ended = True
            self.cond.notify_all()

    def tell_failure(self, data: dict, event_id: int) -> None:
        """End the stream for its followers with an error while the reply's end is still being
        stored, which goes on: until it lands the job is checkpointed and its writer heartbeats
        as before, and once it does, the reply replays as it was stored, without this event.
        Call holding flush_lock."""
        self.failure_told = event_id
        self.end("error", data, event_id)

    @property
    def being_written(self) -> bool:
        """Whether the reply is still to be stored (checkpoints and heartbeats go on)."""
        return not self.ended or self.failure_told is not None

    def stop(self) -> None:
        self.stop_requested = True
        self.upstream.close()

    def wait(self, timeout_s: float | None = None) -> tuple[str, dict] | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.cond:
            while not self.ended:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left)
            return self.result

    def unflushed(self) -> tuple[list[list], int]:
        """Events not yet on disk, and how many events there are with them. Call holding
        flush_lock; once they are written, `written()` is told that count (a write that
        failed leaves them for the next)."""
        with self.cond:
            batch = self.events[self.flushed:]
            if self.failure_told is not None:
                batch = [event for event in batch if event[0] != self.failure_told]
            return batch, len(self.events)

    def written(self, upto: int, taken_at: float) -> None:
        """events[:upto], taken by `unflushed()` at `taken_at` (time.monotonic), are on disk."""
        with self.cond:  # as publish() would see it
            self.flushed = upto
            # Those published meanwhile came after `taken_at`: counted from then, they are written in time.
            self.unflushed_since = None if len(self.events) == upto else taken_at


class JobRegistry:
    def __init__(self, manager: ConversationManager):
        self.manager = manager
        self._jobs: dict[tuple[str, str, str], Job] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._pid: int | None = None

    def add(self, job: Job) -> None:
        with self._lock:
            if job.released:
                return  # its reply ended before its launch was done: nothing left to tend
            self._jobs[(job.owner, job.conversation_id, job.reply_id)] = job
            if self._watcher is None or self._pid != os.getpid() or not self._watcher.is_alive():
                self._pid = os.getpid()
                self._watcher = watcher = threading.Thread(target=self._watch, name="apsara-jobs", daemon=True)
                watcher.start()
                # Beside it, for as long as it runs: stops other processes write, told as they commit.
                threading.Thread(target=self.manager.store.listen_for_stops, name="apsara-stops", daemon=True,
                                 args=(self._stop_told, lambda: self._watcher is watcher)).start()

    def remove(self, job: Job) -> None:
        with self._lock:
            job.released = True
            self._jobs.pop((job.owner, job.conversation_id, job.reply_id), None)

    def get(self, owner: str, conversation_id: str, reply_id: str) -> Job | None:
        return self._jobs.get((owner, conversation_id, reply_id))

    def running(self) -> int:
        return len(self._jobs)

    def drain(self, timeout_s: float) -> int:
        """Let the running replies end, for up to `timeout_s`: a worker told to stop (a deploy,
        a restart) would otherwise cut those whose client had left. What is still running then
        is checkpointed, to be kept as far as it got. Returns how many were left running."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        if self._jobs:
            log.info("waiting up to %.0f s for %d replies to end", max(0.0, timeout_s), len(self._jobs))
        while self._jobs and time.monotonic() < deadline:
            time.sleep(WATCH_PERIOD_S)
        left = list(self._jobs.values())
        for job in left:
            try:
                self.checkpoint(job)
            except Exception:  # noqa: BLE001 - the others' checkpoints still go
                log.exception("checkpointing reply %s", job.reply_id)
        return len(left)

    # -- the watcher ------------------------------------------------------------------
    def _watch(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(WATCH_PERIOD_S)
            with self._lock:
                if self._jobs:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= WATCHER_IDLE_S:
                    # Ends when idle, so that it does not keep a dropped app alive (a test process
                    # makes hundreds, each with its databases open); the next job starts another.
                    self._watcher = None
                    return
            for job in list(self._jobs.values()):
                try:
                    self._tend(job)
                except Exception:  # one job's trouble must not stop the others' checkpoints
                    log.exception("tending reply %s", job.reply_id)

    def _tend(self, job: Job) -> None:
        if not job.being_written:
            return
        now = time.monotonic()
        since = job.unflushed_since
        if (since is not None and now - max(since, job.last_flush) >= CHECKPOINT_S) \
                or now - job.last_flush >= HEARTBEAT_S:
            # Not waiting on a job whose end is being stored (with every event): a slow end
            # (its conversation's lock, a full disk) would hold up every other job's checkpoints.
            self.checkpoint(job, wait=False)
        # A stop request recorded by another process: as often as the store finds cheap.
        if not job.stop_requested and now - job.stop_checked >= self.manager.store.stop_poll_s:
            job.stop_checked = now
            if self._stop_recorded(job):
                self._stop_from_elsewhere(job)

    def stop_all(self, owner: str, conversation_id: str) -> None:
        """Stop every reply of a conversation this process runs (it was deleted)."""
        for job in self._of(owner, conversation_id, None):
            job.stop()

    def _of(self, owner: str, conversation_id: str, reply_id: str | None) -> list[Job]:
        with self._lock:
            return [job for (o, c, r), job in self._jobs.items()
                    if (o, c) == (owner, conversation_id) and reply_id in (None, r)]

    def _stop_told(self, owner: str, conversation_id: str, reply_id: str | None) -> None:
        """A stop request for a reply (None: a deletion, for every reply of the conversation)."""
        for job in self._of(owner, conversation_id, reply_id):
            if not job.stop_requested:
                self._stop_from_elsewhere(job)

    @staticmethod
    def _stop_from_elsewhere(job: Job) -> None:
        log.info("reply %s stopped from another process (or its conversation deleted)", job.reply_id)
        job.stop()

    def checkpoint(self, job: Job, wait: bool = True) -> None:
        if not job.flush_lock.acquire(blocking=wait):
            return
        try:
            self._checkpoint(job)
        finally:
            job.flush_lock.release()

    def _checkpoint(self, job: Job) -> None:
        if not job.being_written:
            return
        job.last_flush = taken_at = time.monotonic()
        batch, upto = job.unflushed()
        mark = self.manager.checkpoint(job.owner, job.conversation_id, job.reply_id, batch)
        if mark is None:
            return  # not written (the lock stayed taken, or the conversation is gone)
        job.written(upto, taken_at)
        # The job's own progress holds no stop: when nothing else was appended since the
        # last look, the next looks on from after it instead of reading it back (200
        # streams checkpointing 4 times a second would otherwise read all that back too).
        if job.position == mark["began_at"]:
            job.position = mark["position"]

    def _stop_recorded(self, job: Job) -> bool:
        """Whether a `stop` record for this reply was appended since we last looked, or
        the conversation was deleted (nobody can see the reply: stop Gemini writing it)."""
        store = self.manager.store
        if job.position is None:
            loaded = store.load(job.owner, job.conversation_id)
            if loaded is None:
                return True
            document, job.position = loaded
            reply = next((m for m in document["messages"] if m["id"] == job.reply_id), None)
            # No such reply: the conversation was deleted and another made under its id since.
            return reply is None or bool(reply.get("_stop"))
        if not store.may_have_news(job.owner, job.conversation_id, job.position):
            return False
        records, job.position = store.follow(job.owner, job.conversation_id, job.position)
        if records is None:  # compacted: read it whole again
            return self._stop_recorded(job)
        return any(r.get("type") == "stop" and r.get("id") == job.reply_id for r in records)
