"""Conversations in and out: Apsara's own export, and the exports of other chat apps.

Every importer turns one conversation of its format into an `Imported`: the
header fields, the message tree (messages in creation order, parents first,
and the `active` map of the tree module) and what it skipped. Nothing here
touches the store; the manager stores the whole result or none of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import re

from ..clock import new_id
from ..conversations.tree import ROOT
from ..schemas import ID_REGEX

_ID = re.compile(ID_REGEX)  # used with fullmatch: `$` alone would let "m1\n" through


class UnknownFormat(ValueError):
    """The document is none of the formats this server can import."""


@dataclass
class Imported:
    header: dict  # title, title_source, created_at, updated_at, model?, system_instruction?...
    messages: list[dict]
    active: dict[str, str]
    id: str | None = None  # the id the source gave the conversation, kept when free
    skipped_messages: int = 0
    files: list[dict] = field(default_factory=list)  # inline files of an Apsara export


@dataclass
class Node:
    """One message of a source tree, before it is linked into ours."""
    id: str
    parent: str | None
    time: float | None
    message: dict | None  # None: not shown to the user, skipped


def build_tree(nodes: dict[str, Node], current: str | None) -> tuple[list[dict], dict[str, str]]:
    """Link the kept nodes into a message tree.

    A skipped node's children hang from its nearest kept ancestor, so nothing a
    user saw is lost with a hidden system message or a tool call between turns.
    Versions keep their source order (by time, then as listed); the active
    path follows `current` (or its nearest kept ancestor) and every other fork
    shows its newest version. Loops and dangling parents (a hostile or broken
    file) make roots, never a hang.
    """
    def kept_ancestor(node_id: str | None) -> str | None:
        seen = set()
        while node_id is not None and node_id in nodes and node_id not in seen:
            seen.add(node_id)
            if nodes[node_id].message is not None:
                return node_id
            node_id = nodes[node_id].parent
        return None

    parent_of = {node_id: kept_ancestor(node.parent) for node_id, node in nodes.items()
                 if node.message is not None}
    # Walk each chain up to a node already placed; a chain that meets itself is a loop: cut it there.
    depth: dict[str, int] = {}
    when: dict[str, float] = {}
    for start in parent_of:
        chain, on_chain, node_id = [], set(), start
        while node_id is not None and node_id not in depth:
            if node_id in on_chain:
                parent_of[chain[-1]] = None
                break
            chain.append(node_id)
            on_chain.add(node_id)
            node_id = parent_of[node_id]
        for node_id in reversed(chain):
            parent = parent_of[node_id]
            depth[node_id] = depth[parent] + 1 if parent is not None else 0
            # Times only grow down a path: a node without one takes its parent's.
            above = when[parent] if parent is not None else 0.0
            when[node_id] = max(nodes[node_id].time or 0.0, above)
    ids = {node_id: (node_id if _ID.fullmatch(node_id) else new_id("m")) for node_id in parent_of}
    order = {node_id: n for n, node_id in enumerate(nodes)}
    messages, active = [], {}
    for node_id in sorted(parent_of, key=lambda n: (when[n], depth[n], order[n])):
        parent = parent_of[node_id]
        message = {**nodes[node_id].message, "id": ids[node_id], "parent_id": ids[parent] if parent else None}
        messages.append(message)
        active[message["parent_id"] or ROOT] = message["id"]  # the newest version, unless on the path below
    tip = kept_ancestor(current)
    while tip is not None:
        parent = parent_of[tip]
        active[ids[parent] if parent else ROOT] = ids[tip]
        tip = parent
    return messages, active
