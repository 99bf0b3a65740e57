"""A conversation's context as its last turn found it, so that a turn walks only what
was added since.

A turn's context is the path from the root to the message it answers, less the
replies the user never read (`context_path`). The next turn's path is the same one
plus the user message and the reply in between, so walking up from the new end
meets the message the last path ended at after a step or two. The path up to there,
its (role, parts) pairs and the sums its checks need (characters, estimated tokens,
file parts) are taken as they were: a message's ancestors never change, nor does an
ended reply (a message that changes is copied, and the walk only stops at the very
dict the last path ended at). A path that passed a reply still being written is not
kept: that reply may yet end as context. Anything else (an edit on an earlier
branch, a conversation read afresh) walks to the root, as before.
On 1,000 messages that is a few microseconds instead of ~0.3 ms each turn.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from ..conversations.manager import is_context
from ..conversations.tree import MessageTree


class Sums(NamedTuple):
    """What a context's checks need of its messages (system instruction apart)."""

    chars: int = 0
    tokens: int = 0  # what its files are guessed to cost
    files: tuple[tuple[int, dict], ...] = ()  # its file parts: (message index, part)


def sums_of(messages: list[dict], first_index: int = 0, before: Sums = Sums()) -> Sums:
    """`before` plus what `messages` (the context's from `first_index` on) add."""
    chars, tokens, files = before.chars, before.tokens, list(before.files)
    for index, message in enumerate(messages, first_index):
        for part in message["parts"]:
            kind = part["type"]
            if kind == "text":
                chars += len(part.get("text", ""))
            elif kind == "file":
                tokens += 1000  # a picture is ~258-1,100 tokens; long media are counted exactly when near a limit
                files.append((index, part))
            else:
                chars += len(part.get("text", "")) + len(str(part.get("args") or part.get("response") or ""))
    return Sums(chars, tokens, tuple(files))


class KnownContext(NamedTuple):
    end: dict | None                  # the message the path was walked up from, as the tree had it
    path: list[dict]                  # context_path() to it
    turns: list[tuple[str, list]]     # (role, parts) of each message of the path
    sums: Sums                        # of the path


_NOTHING = KnownContext(None, [], [], Sums())


class ContextMemo:
    """The last context of each of the last `conversations` conversations a worker served."""

    def __init__(self, conversations: int = 64):
        self._kept: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._size = conversations

    def forget(self, key) -> None:
        """A deleted conversation's messages are not kept."""
        with self._lock:
            self._kept.pop(key, None)

    def context(self, key, tree: MessageTree, upto: str | None) -> KnownContext:
        """The context ending at message `upto` (None: an empty conversation); the lists
        returned are the memo's own: copy before changing them."""
        with self._lock:
            kept = self._kept.get(key)
        end = tree.get(upto) if upto else None
        base, added, node, settled = _NOTHING, [], end, True
        while node is not None:
            if kept is not None and node is kept.end:
                base = kept
                break
            # The common cases first, without a call: a context read afresh walks every message.
            if node["role"] == "user" or node.get("status") == "complete" or is_context(node):
                added.append(node)
            elif node.get("status") == "streaming":
                settled = False  # left out now, it may end as context: never a base for later turns
            parent_id = node["parent_id"]
            node = tree.get(parent_id) if parent_id else None
        added.reverse()
        known = KnownContext(end, base.path + added, base.turns + [(m["role"], m["parts"]) for m in added],
                             sums_of(added, len(base.path), base.sums))
        with self._lock:
            if settled:
                self._kept[key] = known
                self._kept.move_to_end(key)
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
            else:
                self._kept.pop(key, None)
        return known
