"""Following a reply's events: from its job in this process, or from the file.

Both yield `(id, name, data)` for each event after a given id, as a client sees
it, and `IDLE` whenever nothing happened for a while (the stream sends a ping).
A reply whose job runs in this process is followed in memory, at once. Any other
is replayed from the conversation's file and then followed by polling the file:
a `stat()` per poll, and only the bytes appended since are read and parsed.
A reply whose writer died ends with an `error` event carrying what was kept.
"""
from __future__ import annotations

import time
from typing import Iterator

from ..conversations.journal import Replay
from ..conversations.manager import ConversationManager
from ..conversations.views import message_view
from ..conversations.writers import writer_alive
from ..conversations.parts import public_event_data
from .jobs import Job

IDLE = None
POLL_S = (0.02, 0.25)  # from fast right after a change to slow in silence
# The statuses a stream ends with `done`; the others end it with `error`.
DONE_STATUSES = ("complete", "stopped", "blocked")
INTERRUPTED = {"code": 500, "status": "INTERNAL",
               "message": "the server writing this reply stopped; what had arrived is kept"}


def _shown(name: str, data, link, final):
    if name in ("done", "error"):
        return final(name, data)
    if name in ("delta", "thought", "part"):
        return public_event_data(name, data, link)
    return data


def from_job(job: Job, after: int, link, ping_interval_s: float) -> Iterator:
    index = 0
    while True:
        with job.cond:
            if index >= len(job.events) and not job.ended:
                job.cond.wait(ping_interval_s)
            batch = job.events[index:]
            index += len(batch)
            ended = job.ended and index >= len(job.events)
        if not batch and not ended:
            yield IDLE
            continue
        for event_id, name, data in batch:
            if event_id > after:
                yield event_id, name, (data if name in ("done", "error") else _shown(name, data, link, None))
        if ended:
            return


def synthesized(reply: dict) -> list[list]:
    """Events for a reply stored without its own (written before replies kept them,
    or ended long before the last compaction): one per part, ending with its end."""
    first = reply.get("_start_id", 1)
    start = {"id": reply["id"], "model": reply.get("model")}
    if reply.get("routing"):
        start["routing"] = reply["routing"]
    events, next_id = [[first, "reply_start", start]], first + 1
    for part in reply.get("parts", ()):
        if part["type"] in ("text", "thought"):
            if part.get("text"):
                events.append([next_id, "delta" if part["type"] == "text" else "thought", part])
            else:
                continue
        else:
            events.append([next_id, "part", part])
        next_id += 1
    if reply.get("grounding"):
        events.append([next_id, "grounding", reply["grounding"]])
        next_id += 1
    status = reply.get("status")
    if status in DONE_STATUSES:
        events.append([max(next_id, reply.get("last_event_id") or 0), "done"])
    elif status in ("error", "interrupted"):
        events.append([max(next_id, reply.get("last_event_id") or 0), "error", {"error": reply.get("error") or INTERRUPTED}])
    return events


def from_file(manager: ConversationManager, owner: str, conversation_id: str, reply_id: str, after: int,
              ping_interval_s: float) -> Iterator:
    link = manager.link(owner)
    document, position = manager.load_with_position(owner, conversation_id)
    applier = Replay(document)
    tree = applier.tree
    reply = manager.reply_of(tree, reply_id)
    kept = reply.get("_events")
    if kept is None and reply.get("status") != "streaming":
        kept = synthesized(reply)
    kept = kept or []
    index, sent = 0, after

    def final(name, data):
        view = message_view(reply, tree, link)
        return view if name == "done" else {"error": (data or {}).get("error") or INTERRUPTED, "reply": view}

    quiet_since, poll = time.monotonic(), POLL_S[0]
    writer_gone = False
    while True:
        while index < len(kept):
            event = kept[index]
            index += 1
            event_id, name = event[0], event[1]
            data = event[2] if len(event) > 2 else None
            if event_id > sent:
                sent = event_id
                yield event_id, name, _shown(name, data, link, final)
                if name in ("done", "error"):
                    return
            quiet_since, poll = time.monotonic(), POLL_S[0]
        if reply.get("status") != "streaming":
            if not any(event[1] in ("done", "error") for event in kept):
                # Ended by another than its writer (the next message found the writer dead, or a
                # stop it did not answer was stored for it): the stored reply tells its end.
                name = "done" if reply.get("status") in DONE_STATUSES else "error"
                yield sent + 1, name, final(name, {"error": reply.get("error")} if name == "error" else None)
            return
        if not writer_alive(reply):
            if writer_gone:  # and nothing it stored before it went was left to read
                view = message_view(reply, tree, link)
                yield sent + 1, "error", {"error": INTERRUPTED, "reply": view}
                return
            # Read once more first: it may have stored its end just before its process exited
            # (a deploy lets the last reply end, then the worker goes).
            writer_gone = True
        else:
            writer_gone = False  # another machine's writer, late with a checkpoint, then heard from
            time.sleep(poll)
            poll = min(poll * 1.5, POLL_S[1])
        records, position = manager.store.follow(owner, conversation_id, position)
        if records is None:  # compacted (or deleted): read it whole again
            document, position = manager.load_with_position(owner, conversation_id)
            applier = Replay(document)
            tree = applier.tree
            reply = manager.reply_of(tree, reply_id)
            kept, index = reply.get("_events") or synthesized(reply), 0
            continue
        for rec in records:
            applier.apply(rec)
        reply = applier.tree.get(reply_id)  # a changed message is a new dict (journal.Replay)
        kept = reply.get("_events") or kept
        if not records and time.monotonic() - quiet_since >= ping_interval_s:
            quiet_since = time.monotonic()
            yield IDLE
