"""Reading other apps' exports: what a user saw becomes messages, the rest is skipped and counted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from apsara.conversations.tree import MessageTree
from apsara.transfer import Node, build_tree
from apsara.transfer.importing import read_export

EXPORTS = Path(__file__).parent / "fixtures" / "exports"


def load(name: str):
    return json.loads((EXPORTS / name).read_text())


def active_texts(imported) -> list[tuple[str, str]]:
    tree = MessageTree(imported.messages, imported.active)
    return [(m["role"], m["parts"][-1]["text"]) for m in tree.active_path()]


def test_chatgpt_branches_become_versions_and_the_path_follows_current_node():
    batch = read_export(load("chatgpt-tree.json"))
    assert batch.format == "chatgpt" and len(batch.conversations) == 1
    conversation = batch.conversations[0]
    assert conversation.id == "d5dc5307-6807-41a0-8b04-4acee626eeb7"
    assert conversation.header["title"] == "Assist user with summary"
    # 11 user/assistant messages, one of them unfinished; plus the hidden system message.
    assert len(conversation.messages) == 10 and conversation.skipped_messages == 2
    path = active_texts(conversation)
    assert [text for _, text in path][:5] == ["hi there", "Hello! How can I assist you today?", "hi again",
                                               "Hey! Welcome back. What's on your mind?", "tell me a joke"]
    tree = MessageTree(conversation.messages, conversation.active)
    jokes = tree.siblings(tree.active_path()[-1])
    assert len(jokes) == 2 and jokes[-1] == "f63b8e17-aa5c-4ca6-a1bf-d4d285e269b8"  # the second regeneration
    edited = tree.siblings(tree.active_path()[2])
    assert [tree.get(i)["parts"][0]["text"] for i in edited] == ["so cool bro", "hi again"]
    assert not any("short story" in m["parts"][0]["text"] for m in conversation.messages)  # unfinished: skipped


def test_chatgpt_tool_traffic_is_skipped_and_citations_become_links():
    batch = read_export(load("chatgpt-export.json"))
    assert [len(c.messages) for c in batch.conversations] == [6, 4]
    assert batch.skipped_messages == 11  # 2 hidden system, 4 browser calls, 5 browser results
    answers = [m["parts"][0]["text"] for m in batch.conversations[0].messages if m["role"] == "model"]
    assert not any("\u3010" in text or "\u2020" in text for text in answers)
    assert any("](http" in text for text in answers)
    assert all(m["status"] == "complete" for m in batch.conversations[0].messages if m["role"] == "model")


def test_openwebui_answers_without_html_and_reasoning_as_thoughts():
    batch = read_export(load("openwebui-export.json"))
    assert batch.format == "openwebui"
    assert [c.id for c in batch.conversations] == ["reasoning-chat", "tool-chat", "simple-chat"]
    reasoning = batch.conversations[0].messages[1]["parts"]
    assert reasoning[0]["type"] == "thought" and "150 + 105" in reasoning[0]["text"]
    assert reasoning[1] == {"type": "text", "text": "255"}
    for conversation in batch.conversations:
        for message in conversation.messages:
            assert "<details" not in message["parts"][-1]["text"]


def test_openwebui_content_without_output_drops_the_details_blocks():
    chat = {"id": "x", "title": "t", "chat": {"history": {"currentId": "b", "messages": {
        "a": {"id": "a", "parentId": None, "role": "user", "content": "2+2?", "timestamp": 1},
        "b": {"id": "b", "parentId": "a", "role": "assistant", "done": True, "timestamp": 2,
              "content": '<details type="reasoning"><summary>Thought</summary>&gt; add them</details>\n4'}}}}}
    [conversation] = read_export([chat]).conversations
    assert conversation.messages[1]["parts"] == [{"type": "thought", "text": "> add them"},
                                                 {"type": "text", "text": "4"}]


def test_entries_with_nothing_shown_are_counted_not_imported():
    hidden_only = {"title": "empty", "mapping": {"r": {"id": "r", "message": None, "parent": None,
                                                       "children": []}}}
    batch = read_export([hidden_only, {"no": "mapping"}, load("chatgpt-tree.json")[0]])
    assert len(batch.conversations) == 1 and batch.skipped_conversations == 2


def test_loops_and_dangling_parents_make_roots_not_hangs():
    text = lambda t: {"role": "user", "created_at": "", "parts": [{"type": "text", "text": t}]}  # noqa: E731
    nodes = {"a": Node("a", "b", 1.0, text("a")), "b": Node("b", "a", 2.0, text("b")),
             "c": Node("c", "missing", 3.0, text("c")), "d": Node("d", "d", 4.0, text("d"))}
    messages, active = build_tree(nodes, "zzz")
    tree = MessageTree(messages, active)
    assert sorted(m["id"] for m in messages) == ["a", "b", "c", "d"]
    for message in messages:  # every message reaches a root
        seen = set()
        while message["parent_id"]:
            assert message["id"] not in seen
            seen.add(message["id"])
            message = tree.get(message["parent_id"])


@pytest.mark.parametrize("document", [{"some": "object"}, [1, 2, 3], "text", [], [{"chat": None}]])
def test_unknown_documents_are_refused(document):
    from apsara.transfer import UnknownFormat
    with pytest.raises(UnknownFormat):
        read_export(document)
