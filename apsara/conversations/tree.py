"""The message tree of one conversation: every version of every message.

Messages are kept in creation order, each with a `parent_id` (None for the
first message). Versions of a message are siblings: children of the same
parent. `active` maps each parent (the root is "") to its active child, so the
active path is found by walking from the root, and every parent remembers which
branch below it was last active — that is what `select` brings back.
Nothing is ever removed: an edit adds a sibling and points `active` at it.
"""
from __future__ import annotations

ROOT = ""


class MessageTree:
    def __init__(self, messages: list[dict] | None = None, active: dict | None = None):
        self.messages: list[dict] = messages if messages is not None else []
        self.active: dict[str, str] = active if active is not None else {}
        self.by_id = {m["id"]: m for m in self.messages}
        self._children: dict[str, list[str]] | None = None

    @property
    def children(self) -> dict[str, list[str]]:
        """Parent id -> its children's ids, oldest first. Made on first use: most trees
        (a turn makes several) are only walked along the active path."""
        if self._children is None:
            self._children = {}
            for message in self.messages:
                self._children.setdefault(message["parent_id"] or ROOT, []).append(message["id"])
        return self._children

    @classmethod
    def of(cls, document: dict) -> "MessageTree":
        return cls(document.setdefault("messages", []), document.setdefault("active", {}))

    def get(self, message_id: str) -> dict | None:
        return self.by_id.get(message_id)

    def active_path(self) -> list[dict]:
        path, parent = [], ROOT
        while (child := self.active.get(parent)) is not None:
            message = self.by_id[child]
            path.append(message)
            parent = child
        return path

    def last(self) -> dict | None:
        message, parent = None, ROOT
        while (child := self.active.get(parent)) is not None:
            message = self.by_id[child]
            parent = child
        return message

    def siblings(self, message: dict) -> list[str]:
        parent = message["parent_id"] or ROOT
        if self._children is None:  # one parent's children: a scan costs less than the whole map
            return [m["id"] for m in self.messages if (m["parent_id"] or ROOT) == parent]
        return list(self._children.get(parent, ()))

    def add(self, message: dict) -> dict:
        """Append a message under its parent and make it the active child there."""
        parent = message["parent_id"] or ROOT
        if parent != ROOT and parent not in self.by_id:
            raise KeyError(parent)
        self.messages.append(message)
        self.by_id[message["id"]] = message
        if self._children is not None:
            self._children.setdefault(parent, []).append(message["id"])
        self.active[parent] = message["id"]
        return message

    def select(self, message_id: str) -> None:
        """Make a message active with all its ancestors; its own subtree keeps its memory."""
        node = self.by_id[message_id]
        while True:
            parent = node["parent_id"] or ROOT
            self.active[parent] = node["id"]
            if parent == ROOT:
                return
            node = self.by_id[parent]
