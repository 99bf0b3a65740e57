"""The records a conversation is made of, and how they add up to its current state.

A conversation is a snapshot (its header, every message, the active branch at
each fork) followed by records appended since. Each record is one change, small
and self-contained, so the same records can later be rows of a database table
(conversation, seq, type, at, payload):

- `conversation`: the header after a change (creation, settings, title, cache).
- `message`: a new message, user message or reply, made active under its parent.
- `progress`: events a reply received since its last checkpoint.
- `reply`: a reply ended: its last events and its final fields (status, usage...).
- `select`: a version was made active.
- `stop`: someone asked a streaming reply to stop.

Reply events are kept with the reply (`_events`) as `[id, name, data]`: the ids
its stream gave them, and `data` in stored form (thought signatures kept, file
parts without URLs). A reply's parts are the fold of its events, by the same
function the reply builder uses while streaming, so a checkpoint never has to
rewrite the text already written.
"""
from __future__ import annotations

from .parts import apply_event
from .tree import MessageTree

RECORD_TYPES = ("conversation", "message", "progress", "reply", "select", "stop")
# Records that are activity a user would call "updated"; progress and stop are not.
TOUCHING = ("conversation", "message", "reply", "select")
# Records after which the active path may be another length (a header brings its own count).
PATH_CHANGING = ("conversation", "message", "select")


def record(seq: int, kind: str, at: str, **payload) -> dict:
    return {"seq": seq, "type": kind, "at": at, **payload}


class Replay:
    """Applies records to a document (`conversation`, `messages`, `active`) in order.

    Messages are never changed in place: one about to change is copied first, so a
    document can share its message dicts with the store's cache of earlier reads."""

    def __init__(self, document: dict, tree: MessageTree | None = None):
        self.document = document
        self.tree = tree if tree is not None else MessageTree.of(document)  # kept in step with it
        self._owned: set[int] = set()
        self._path_changed = False

    def _writable(self, message_id: str | None) -> dict | None:
        message = self.tree.get(message_id)
        if message is None or id(message) in self._owned:
            return message
        copy = dict(message)
        copy["parts"] = [dict(p) for p in message.get("parts", ())]
        for key in ("_events", "_writer"):
            if key in copy:
                copy[key] = type(copy[key])(copy[key])
        self.tree.replace(copy)
        self._owned.add(id(copy))
        return copy

    def apply(self, rec: dict) -> None:
        kind = rec.get("type")
        document, tree = self.document, self.tree
        seq = rec.get("seq", 0)
        if seq and seq <= document.get("seq", 0):
            return  # already in the snapshot
        document["seq"] = max(document.get("seq", 0), seq)
        if kind == "conversation":
            header = dict(rec["conversation"])
            header["updated_at"] = max(header.get("updated_at", ""), document["conversation"].get("updated_at", ""))
            document["conversation"] = header
        elif kind == "message":
            message = rec["message"]
            if tree.get(message["id"]) is None and (not message["parent_id"] or tree.get(message["parent_id"])):
                message = dict(message)
                tree.add(message)
                self._owned.add(id(message))
        elif kind == "progress":
            reply = tree.get(rec.get("id"))
            if reply is not None and reply.get("status") == "streaming":
                reply = self._writable(reply["id"])
                fold(reply, rec.get("events") or ())
                if "_writer" in reply:
                    reply["_writer"] = {**reply["_writer"], "seen": rec["at"]}
        elif kind == "reply":
            reply = tree.get(rec.get("id"))
            if reply is not None and reply.get("status") == "streaming":  # the first end wins
                reply = self._writable(reply["id"])
                fold(reply, rec.get("events") or ())
                reply.update(rec.get("fields") or {})
                reply["_ended_at"] = rec["at"]
                reply.pop("_writer", None)
                reply.pop("_stop", None)
                tree.status_changed(reply)
        elif kind == "select":
            if tree.get(rec.get("id")) is not None:
                tree.select(rec["id"])
        elif kind == "stop":
            reply = tree.get(rec.get("id"))
            if reply is not None and reply.get("status") == "streaming":
                reply = self._writable(reply["id"])
                reply["_stop"] = rec["at"]
        if kind in TOUCHING:
            header = document["conversation"]
            header["updated_at"] = max(header.get("updated_at", ""), rec["at"])
        if kind in PATH_CHANGING:
            self._path_changed = True

    def count_messages(self) -> None:
        """Bring the header's message count up to date, once for all the records applied.
        A message added at the end of the active path lengthens it by one without a walk
        (the tree knows where it ends); a new version or a select walks it once."""
        if self._path_changed:
            self.document["conversation"]["message_count"] = self.tree.path_length()
            self._path_changed = False


def fold(reply: dict, events) -> None:
    """Add events to a reply: its parts, grounding, last event id and the events themselves."""
    kept = reply.setdefault("_events", [])
    for event in events:
        event_id, name, data = event[0], event[1], (event[2] if len(event) > 2 else None)
        apply_event(reply, name, data)
        kept.append(event)
        if event_id:
            reply["last_event_id"] = event_id


def replay(document: dict, records) -> dict:
    applier = Replay(document)
    for rec in records:
        applier.apply(rec)
    applier.count_messages()
    return document
