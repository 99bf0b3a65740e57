"""What a message tree keeps with its document (the id map, the end of the active path
and its length, children, replies being written) always answers as a tree made afresh
from the same messages would, through adds, versions, selects, status changes, the
store's copies of the document, and replaced containers."""
from __future__ import annotations

import random

from apsara.conversations.journal import record
from apsara.conversations.store import reader_copy
from tests.journaled import Journaled
from apsara.conversations.tree import DERIVED, MessageTree


def _afresh(document: dict) -> MessageTree:
    """A tree that knows nothing yet: every answer walked from the messages."""
    return MessageTree(document["messages"], document["active"])


def _same_answers(document: dict) -> None:
    kept, walked = MessageTree.of(document), _afresh(document)
    assert kept.last() is walked.last() or kept.last() == walked.last()
    assert kept.path_length() == len(walked.active_path())
    assert [m["id"] for m in kept.active_path()] == [m["id"] for m in walked.active_path()]
    streaming = {m["id"] for m in document["messages"] if m.get("status") == "streaming"}
    assert {m["id"] for m in kept.streaming()} == streaming
    assert document[DERIVED].streaming == streaming  # ended replies leave it: it stays a handful
    for message in document["messages"]:
        assert kept.get(message["id"]) is message
        assert kept.siblings(message) == [m["id"] for m in document["messages"]
                                          if m["parent_id"] == message["parent_id"]]
    assert document["conversation"]["message_count"] == len(walked.active_path())


def test_kept_answers_match_a_walk_through_a_random_history():
    rng = random.Random(7)
    journal, made = Journaled(), 0
    apply = journal.apply

    for step in range(1500):
        tree = MessageTree.of(journal.document)
        roll = rng.random()
        if roll < 0.45 or not journal.document["messages"]:  # a turn at the end of the path
            last = tree.last()
            made += 2
            user = {"id": f"u{made}", "role": "user", "parent_id": last["id"] if last else None,
                    "parts": [{"type": "text", "text": "q"}]}
            reply = {"id": f"r{made}", "role": "model", "parent_id": user["id"], "parts": [],
                     "status": "streaming"}
            apply(record(0, "message", "t", message=user), record(0, "message", "t", message=reply))
        elif roll < 0.6:  # a reply ends, or makes progress
            streaming = tree.streaming()
            if streaming:
                reply = rng.choice(streaming)
                if rng.random() < 0.5:
                    apply(record(0, "progress", "t", id=reply["id"], events=[[2, "delta", {"text": "a"}]]))
                else:
                    status = rng.choice(["complete", "stopped", "error", "interrupted"])
                    apply(record(0, "reply", "t", id=reply["id"], events=[], fields={"status": status}))
        elif roll < 0.75:  # a new version of an earlier message (an edit or a regenerate)
            target = rng.choice(journal.document["messages"])
            made += 1
            version = {"id": f"v{made}", "role": target["role"], "parent_id": target["parent_id"],
                       "parts": [], "status": "complete"}
            apply(record(0, "message", "t", message=version))
        elif roll < 0.85:  # another version made active
            apply(record(0, "select", "t", id=rng.choice(journal.document["messages"])["id"]))
        elif roll < 0.95:  # the store hands out a copy: what the tree knew goes with it
            copy = reader_copy(journal.document)
            assert copy[DERIVED] is not journal.document.get(DERIVED)
            journal.document = copy
        else:  # containers replaced by other code: known again from the messages
            journal.document = {**journal.document, "messages": [dict(m) for m in journal.document["messages"]],
                        "active": dict(journal.document["active"])}
        if step % 10 == 0:
            _same_answers(journal.document)
    _same_answers(journal.document)


def test_a_copy_changes_apart_from_the_original():
    document = {"conversation": {"message_count": 0}, "messages": [], "active": {}, "seq": 0}
    tree = MessageTree.of(document)
    tree.add({"id": "a", "role": "user", "parent_id": None, "parts": []})
    copy = reader_copy(document)
    MessageTree.of(copy).add({"id": "b", "role": "model", "parent_id": "a", "parts": [], "status": "streaming"})
    original = MessageTree.of(document)
    assert original.get("b") is None and original.last()["id"] == "a" and original.path_length() == 1
    assert original.streaming() == [] and original.siblings({"parent_id": "a"}) == []
    assert MessageTree.of(copy).last()["id"] == "b" and MessageTree.of(copy).path_length() == 2


def test_a_message_added_outside_the_tree_is_noticed():
    document = {"conversation": {}, "messages": [], "active": {}}
    MessageTree.of(document).add({"id": "a", "role": "user", "parent_id": None, "parts": []})
    document["messages"].append({"id": "b", "role": "model", "parent_id": "a", "parts": []})
    document["active"]["a"] = "b"
    assert MessageTree.of(document).get("b") is not None
    assert MessageTree.of(document).path_length() == 2


def test_a_stored_key_of_the_same_name_is_not_taken_for_what_the_tree_knows():
    """A first-format file is a JSON object of the user's own: it may hold any key."""
    document = {"conversation": {}, "messages": [{"id": "a", "role": "user", "parent_id": None, "parts": []}],
                "active": {"": "a"}, DERIVED: {"by_id": {}}}
    assert MessageTree.of(document).last()["id"] == "a"
    assert reader_copy(document)[DERIVED].by_id == {"a": document["messages"][0]}
