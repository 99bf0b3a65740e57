"""The message tree of one conversation: every version of every message.

Messages are kept in creation order, each with a `parent_id` (None for the
first message). Versions of a message are siblings: children of the same
parent. `active` maps each parent (the root is "") to its active child, so the
active path is found by walking from the root, and every parent remembers which
branch below it was last active — that is what `select` brings back.
Nothing is ever removed: an edit adds a sibling and points `active` at it.

What a tree finds by walking every message (the id map, the end of the active
path and its length, children, replies being written) is kept with its document
(`Derived`, under the document's "_derived" key) and carried over to the copies
the store hands out, so that a long conversation's turn does not walk its
thousands of messages again each time it looks at the tree. It is kept true by
the tree's own changes (`add`, `select`, `status_changed`), the only way the
journal changes a document; a document whose message list or active map was
replaced has it made again.
"""
from __future__ import annotations

ROOT = ""
DERIVED = "_derived"  # the document key; "_" keys are never stored nor shown


class Derived:
    """What a tree knows of its document's messages without walking them again."""

    __slots__ = ("messages", "active", "by_id", "children", "streaming", "tip", "length")

    def __init__(self, messages: list[dict], active: dict[str, str]):
        self.messages, self.active = messages, active
        self.by_id, self.streaming, children = {}, set(), {}
        for m in messages:
            self.by_id[m["id"]] = m
            children.setdefault(m.get("parent_id") or ROOT, []).append(m["id"])
            if m.get("status") == "streaming":
                self.streaming.add(m["id"])
        # Tuples, replaced on change: a copy of the document shares them safely.
        self.children = {parent: tuple(ids) for parent, ids in children.items()}
        self.tip: str | None = None  # the last message of the active path (ROOT: empty); None: not known
        self.length = 0  # of the active path, when `tip` is known

    def serves(self, messages: list[dict], active: dict[str, str]) -> bool:
        return self.messages is messages and self.active is active and len(self.by_id) == len(messages)

    def copy_for(self, messages: list[dict], active: dict[str, str]) -> "Derived":
        """The same knowledge for a copy of the document with containers of its own."""
        copy = Derived.__new__(Derived)
        copy.messages, copy.active = messages, active
        copy.by_id, copy.streaming = dict(self.by_id), set(self.streaming)
        copy.children = dict(self.children)  # its tuples are shared: they are replaced, never changed
        copy.tip, copy.length = self.tip, self.length
        return copy


def carry_derived(document: dict, copy: dict) -> None:
    """Give `copy` (the document with its own message list and active map) what the
    document's tree knew, or nothing when that no longer describes the document."""
    derived = document.get(DERIVED)
    if isinstance(derived, Derived) and derived.serves(document.get("messages"), document.get("active")):
        copy[DERIVED] = derived.copy_for(copy["messages"], copy["active"])
    else:
        copy.pop(DERIVED, None)


class MessageTree:
    def __init__(self, messages: list[dict] | None = None, active: dict | None = None,
                 derived: Derived | None = None):
        self.messages: list[dict] = messages if messages is not None else []
        self.active: dict[str, str] = active if active is not None else {}
        self._derived = derived if derived is not None else Derived(self.messages, self.active)
        self.by_id = self._derived.by_id

    @classmethod
    def of(cls, document: dict) -> "MessageTree":
        """The document's tree; what it derives stays with the document for the next one."""
        messages, active = document.setdefault("messages", []), document.setdefault("active", {})
        derived = document.get(DERIVED)
        if not isinstance(derived, Derived) or not derived.serves(messages, active):
            derived = document[DERIVED] = Derived(messages, active)
        return cls(messages, active, derived)

    def get(self, message_id: str) -> dict | None:
        return self.by_id.get(message_id)

    def active_path(self) -> list[dict]:
        path, parent = [], ROOT
        while (child := self.active.get(parent)) is not None:
            message = self.by_id[child]
            path.append(message)
            parent = child
        self._derived.tip, self._derived.length = parent, len(path)
        return path

    def last(self) -> dict | None:
        if self._derived.tip is None:
            self.active_path()
        return self.by_id.get(self._derived.tip)

    def path_length(self) -> int:
        """How many messages the active path holds."""
        if self._derived.tip is None:
            self.active_path()
        return self._derived.length

    @property
    def children(self) -> dict[str, tuple[str, ...]]:
        """Parent id -> its children's ids, oldest first."""
        return self._derived.children

    def siblings(self, message: dict) -> list[str]:
        return list(self.children.get(message["parent_id"] or ROOT, ()))

    def streaming(self) -> list[dict]:
        """The replies whose status is `streaming`, oldest first."""
        found = [self.by_id[i] for i in self._derived.streaming if i in self.by_id]
        return sorted((m for m in found if m.get("status") == "streaming"),
                      key=lambda m: (m.get("created_at") or "", m["id"]))

    def add(self, message: dict) -> dict:
        """Append a message under its parent and make it the active child there."""
        parent = message["parent_id"] or ROOT
        if parent != ROOT and parent not in self.by_id:
            raise KeyError(parent)
        derived = self._derived
        self.messages.append(message)
        self.by_id[message["id"]] = message
        derived.children[parent] = derived.children.get(parent, ()) + (message["id"],)
        if derived.tip is not None and derived.tip == parent and self.active.get(parent) is None:
            derived.tip, derived.length = message["id"], derived.length + 1  # the path grew by one
        else:
            derived.tip = None  # a new version, or a branch off the path: walked when asked
        self.active[parent] = message["id"]
        self.status_changed(message)
        return message

    def replace(self, message: dict) -> None:
        """Put a changed copy of a message in its place (messages are never changed in place)."""
        messages = self.messages
        for n in range(len(messages) - 1, -1, -1):  # the message changed is nearly always one of the last
            if messages[n]["id"] == message["id"]:
                messages[n] = message
                break
        else:
            raise KeyError(message["id"])
        self.by_id[message["id"]] = message
        self.status_changed(message)

    def status_changed(self, message: dict) -> None:
        """Call after a message's status may have changed."""
        if message.get("status") == "streaming":
            self._derived.streaming.add(message["id"])
        else:
            self._derived.streaming.discard(message["id"])

    def select(self, message_id: str) -> None:
        """Make a message active with all its ancestors; its own subtree keeps its memory."""
        node = self.by_id[message_id]
        self._derived.tip = None
        while True:
            parent = node["parent_id"] or ROOT
            self.active[parent] = node["id"]
            if parent == ROOT:
                return
            node = self.by_id[parent]
