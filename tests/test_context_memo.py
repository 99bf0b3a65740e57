"""A turn's context from what the last turn of its conversation found (ContextMemo) is
always the context walked afresh: the same messages, (role, parts) pairs and sums,
through turns, edits, regenerations, version switches, replies that end or die, the
store's copies and a conversation read again from disk."""
from __future__ import annotations

import random

from apsara.conversations.journal import record
from apsara.turns.context import context_path
from apsara.conversations.store import reader_copy
from apsara.conversations.tree import MessageTree
from apsara.turns.context import ContextMemo, sums_of
from apsara.testing.fake_gemini import Reply
from tests.journaled import Journaled


def _as_walked(memo: ContextMemo, key, document: dict, upto: str | None):
    tree = MessageTree.of(document)
    known = memo.context(key, tree, upto)
    walked = context_path(tree, upto) if upto else []
    assert [m["id"] for m in known.path] == [m["id"] for m in walked]
    assert all(a == b for a, b in zip(known.path, walked))
    assert known.turns == [(m["role"], m["parts"]) for m in walked]
    assert known.sums == sums_of(walked)
    return known


def _read_again(document: dict, parts_of) -> dict:
    """The document as another read makes it: other dicts for the same message ids."""
    return {**document, "messages": [dict(m, parts=parts_of(m)) for m in document["messages"]],
            "active": dict(document["active"])}


def test_the_kept_context_is_the_walked_one_through_a_random_history():
    rng = random.Random(11)
    memo = ContextMemo(conversations=2)
    journal, made = Journaled(), 0
    apply = journal.apply

    def parts():
        kind = rng.random()
        if kind < 0.2:
            return [{"type": "file", "file_id": f"f{made}", "mime_type": "image/png"}]
        if kind < 0.3:
            return [{"type": "function_call", "name": "f", "args": {"n": made}}]
        return [{"type": "text", "text": "x" * rng.randrange(0, 40)}]

    walks = 0
    for _ in range(2500):
        tree = MessageTree.of(journal.document)
        roll = rng.random()
        if roll < 0.4 or not journal.document["messages"]:  # a turn: its context, then its messages
            last = tree.last()
            _as_walked(memo, "c", journal.document, last["id"] if last else None)
            walks += 1
            made += 2
            user = {"id": f"u{made}", "role": "user", "parent_id": last["id"] if last else None, "parts": parts()}
            reply = {"id": f"r{made}", "role": "model", "parent_id": user["id"], "parts": [],
                     "status": "streaming"}
            apply(record(0, "message", "t", message=user), record(0, "message", "t", message=reply))
        elif roll < 0.55:  # a reply gets text, or ends one way or another
            for reply in tree.streaming():
                if rng.random() < 0.3:
                    apply(record(0, "progress", "t", id=reply["id"], events=[[2, "delta", {"text": "a"}]]))
                else:
                    status = rng.choice(["complete", "complete", "stopped", "error", "interrupted"])
                    apply(record(0, "reply", "t", id=reply["id"], events=[[3, "delta", {"text": "b"}]],
                                 fields={"status": status}))
        elif roll < 0.7:  # an edit or a regeneration: the context ends at the target's parent
            target = rng.choice(journal.document["messages"])
            _as_walked(memo, "c", journal.document, target["parent_id"])
            walks += 1
            made += 1
            version = {"id": f"v{made}", "role": target["role"], "parent_id": target["parent_id"],
                       "parts": parts(), "status": "complete"}
            apply(record(0, "message", "t", message=version))
        elif roll < 0.8:
            apply(record(0, "select", "t", id=rng.choice(journal.document["messages"])["id"]))
        elif roll < 0.9:
            journal.document = reader_copy(journal.document)
        elif roll < 0.94:  # read again from disk: other dicts, the same messages
            journal.document = _read_again(journal.document, lambda m: [dict(p) for p in m["parts"]])
        elif roll < 0.97:  # deleted, and imported again under the same ids with other texts
            journal.document = _read_again(journal.document, lambda m: [{"type": "text", "text": f"other {made}"}])
        else:  # another conversation passes through the memo
            _as_walked(memo, rng.choice(["d", "e"]), {"messages": [], "active": {}}, None)
    assert walks > 1000


def test_a_turn_walks_only_what_was_added():
    memo = ContextMemo()
    document = {"conversation": {}, "messages": [], "active": {}}
    tree = MessageTree.of(document)
    parent = None
    for n in range(200):
        tree.add({"id": f"u{n}", "role": "user", "parent_id": parent, "parts": [{"type": "text", "text": "q"}]})
        tree.add({"id": f"r{n}", "role": "model", "parent_id": f"u{n}", "parts": [{"type": "text", "text": "a"}],
                  "status": "complete"})
        parent = f"r{n}"
    first = memo.context("c", tree, parent)
    tree.add({"id": "u200", "role": "user", "parent_id": parent, "parts": [{"type": "text", "text": "q"}]})
    tree.add({"id": "r200", "role": "model", "parent_id": "u200", "parts": [], "status": "complete"})

    looked_at = []

    class Watching(MessageTree):
        def get(self, message_id):
            looked_at.append(message_id)
            return super().get(message_id)

    second = memo.context("c", Watching.of(document), "r200")
    assert looked_at == ["r200", "u200", parent]
    assert second.path[:400] == first.path and second.turns[:400] == first.turns
    assert len(second.path) == 402


def test_a_deleted_conversation_leaves_nothing_in_the_memos(chat_app, chat, fake):
    """What a worker keeps of a conversation's last turn goes when the conversation does."""
    fake.push(Reply(parts=["An answer."]), Reply(parts=["Another."]))
    assert chat.post("/api/v1/conversations", json={"id": "kept"}).status_code == 201
    assert chat.post("/api/v1/conversations/kept/messages", json={"text": "a secret"}).status_code == 201
    assert chat.post("/api/v1/conversations/kept/messages", json={"text": "more"}).status_code == 201
    planner, key = chat_app.extensions["apsara"].chat.planner, ("local", "kept")
    memos = (planner.contexts._kept, planner.contents._kept)
    assert all(key in kept for kept in memos)
    assert chat.delete("/api/v1/conversations/kept").status_code == 204
    assert not any(key in kept for kept in memos)
