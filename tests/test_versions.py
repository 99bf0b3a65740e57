"""Editing a message, regenerating a reply, switching versions: nothing is ever lost,
and the model only ever sees the active path."""
from __future__ import annotations

import threading

import pytest

from apsara.testing.fake_gemini import Reply
from tests.conftest import parse_sse

API = "/api/v1/conversations"


def texts_sent(fake):
    return [(c["role"], " ".join(p["text"] for p in c["parts"])) for c in fake.last_body()["contents"]]


def active(client):
    return [(m["role"], m["text"]) for m in client.get(f"{API}/c1").json["messages"]]


def converse(client, n):
    """n turns: user 'u1'.. with echo replies 'Echo: u1'..; returns the message ids."""
    client.post(API, json={"id": "c1"})
    ids = []
    for i in range(1, n + 1):
        result = client.post(f"{API}/c1/messages", json={"text": f"u{i}"}).json
        ids += [result["user_message"]["id"], result["reply"]["id"]]
    return ids


def test_edit_in_the_middle_of_six_turns(chat, fake):
    ids = converse(chat, 6)
    result = chat.put(f"{API}/c1/messages/{ids[4]}", json={"text": "u3 edited"})  # third user message
    assert result.status_code == 201
    edited, reply = result.json["user_message"], result.json["reply"]
    assert edited["parent_id"] == ids[3] and edited["siblings"] == [ids[4], edited["id"]]
    assert reply["text"] == "Echo: u3 edited"
    # the model saw the two turns before the edit and the edit, nothing after
    assert texts_sent(fake) == [("user", "u1"), ("model", "Echo: u1"), ("user", "u2"),
                                ("model", "Echo: u2"), ("user", "u3 edited")]
    assert active(chat) == [("user", "u1"), ("model", "Echo: u1"), ("user", "u2"), ("model", "Echo: u2"),
                            ("user", "u3 edited"), ("model", "Echo: u3 edited")]
    conversation = chat.get(f"{API}/c1").json
    assert conversation["message_count"] == 6
    # the next message continues from the edit
    chat.post(f"{API}/c1/messages", json={"text": "u4 new"})
    assert texts_sent(fake)[-3:] == [("user", "u3 edited"), ("model", "Echo: u3 edited"), ("user", "u4 new")]


def test_edit_then_regenerate_then_edit_further_up(chat, fake):
    ids = converse(chat, 3)
    edit = chat.put(f"{API}/c1/messages/{ids[4]}", json={"text": "u3b"}).json
    fake.push(Reply(parts=["Second take on u3b."]))
    regen = chat.post(f"{API}/c1/messages/{edit['reply']['id']}/regenerate", json={})
    assert regen.status_code == 201
    new_reply = regen.json["reply"]
    assert "user_message" not in regen.json
    assert new_reply["siblings"] == [edit["reply"]["id"], new_reply["id"]]
    assert texts_sent(fake) == [("user", "u1"), ("model", "Echo: u1"), ("user", "u2"),
                                ("model", "Echo: u2"), ("user", "u3b")]
    top = chat.put(f"{API}/c1/messages/{ids[0]}", json={"text": "u1b"}).json
    assert texts_sent(fake) == [("user", "u1b")]
    assert top["user_message"]["siblings"] == [ids[0], top["user_message"]["id"]]
    assert active(chat) == [("user", "u1b"), ("model", "Echo: u1b")]


def test_select_an_old_version_and_continue_on_it(chat, fake):
    ids = converse(chat, 3)
    chat.put(f"{API}/c1/messages/{ids[2]}", json={"text": "u2 edited"})  # the branch moves away
    selected = chat.post(f"{API}/c1/messages/{ids[2]}/select")
    assert selected.status_code == 200
    # the old version comes back with the branch that was last active below it
    assert [(m["role"], m["text"]) for m in selected.json["messages"]] == [
        ("user", "u1"), ("model", "Echo: u1"), ("user", "u2"), ("model", "Echo: u2"),
        ("user", "u3"), ("model", "Echo: u3")]
    chat.post(f"{API}/c1/messages", json={"text": "u4"})
    assert texts_sent(fake) == [("user", "u1"), ("model", "Echo: u1"), ("user", "u2"), ("model", "Echo: u2"),
                                ("user", "u3"), ("model", "Echo: u3"), ("user", "u4")]


def test_nothing_is_ever_lost(chat, fake, tmp_path):
    ids = converse(chat, 3)
    created = set(ids)
    for text in ("a", "b"):
        result = chat.put(f"{API}/c1/messages/{ids[2]}", json={"text": text}).json
        created |= {result["user_message"]["id"], result["reply"]["id"]}
        regen = chat.post(f"{API}/c1/messages/{result['reply']['id']}/regenerate").json
        created.add(regen["reply"]["id"])
    result = chat.put(f"{API}/c1/messages/{ids[0]}", json={"text": "top"}).json
    created |= {result["user_message"]["id"], result["reply"]["id"]}
    from apsara.conversations.store import ConversationStore

    on_disk = {m["id"] for m in ConversationStore(tmp_path / "data").read("local", "c1")["messages"]}
    assert on_disk == created
    for message_id in created:  # every version can be brought back
        view = chat.post(f"{API}/c1/messages/{message_id}/select").json
        assert message_id in [m["id"] for m in view["messages"]]


def test_siblings_are_oldest_first_and_listed_on_every_message(chat, fake):
    ids = converse(chat, 2)
    second = chat.put(f"{API}/c1/messages/{ids[2]}", json={"text": "v2"}).json["user_message"]["id"]
    third = chat.put(f"{API}/c1/messages/{ids[2]}", json={"text": "v3"}).json["user_message"]["id"]
    messages = chat.get(f"{API}/c1").json["messages"]
    assert messages[2]["siblings"] == [ids[2], second, third]
    assert messages[0]["siblings"] == [ids[0]] and len(messages[3]["siblings"]) == 1


def test_edit_keeps_or_replaces_text_and_files(chat, fake):
    ids = converse(chat, 1)
    kept = chat.put(f"{API}/c1/messages/{ids[0]}", json={"model": "gemini-3.1-pro-preview"}).json
    assert kept["user_message"]["text"] == "u1"
    assert kept["reply"]["model"] == "gemini-3.1-pro-preview"
    assert fake.generate_requests()[-1]["model"] == "gemini-3.1-pro-preview"


def test_regenerate_with_another_model(chat, fake):
    ids = converse(chat, 1)
    regen = chat.post(f"{API}/c1/messages/{ids[1]}/regenerate", json={"model": "gemini-3.7-flash"})
    assert regen.json["reply"]["model"] == "gemini-3.7-flash"
    assert fake.generate_requests()[-1]["model"] == "gemini-3.7-flash"


def test_streamed_edit_and_regenerate(chat, fake):
    ids = converse(chat, 2)
    events, _ = parse_sse(chat.put(f"{API}/c1/messages/{ids[2]}", json={"text": "streamed edit", "stream": True})
                          .get_data(as_text=True))
    assert [e[0] for e in events][:2] == ["user_message", "reply_start"] and events[-1][0] == "done"
    assert events[0][2]["siblings"] == [ids[2], events[0][2]["id"]]
    reply_id = events[-1][2]["id"]
    events, _ = parse_sse(chat.post(f"{API}/c1/messages/{reply_id}/regenerate", json={"stream": True})
                          .get_data(as_text=True))
    assert events[0][0] == "reply_start" and events[-1][0] == "done"
    assert events[-1][2]["siblings"] == [reply_id, events[-1][2]["id"]]
    assert texts_sent(fake)[-1] == ("user", "streamed edit")


def test_edit_and_regenerate_errors(chat, fake):
    ids = converse(chat, 1)
    model_edit = chat.put(f"{API}/c1/messages/{ids[1]}", json={"text": "x"})
    assert model_edit.status_code == 422
    user_regen = chat.post(f"{API}/c1/messages/{ids[0]}/regenerate")
    assert user_regen.status_code == 422
    for response in (chat.put(f"{API}/c1/messages/nope", json={"text": "x"}),
                     chat.post(f"{API}/c1/messages/nope/regenerate"),
                     chat.post(f"{API}/c1/messages/nope/select"),
                     chat.put(f"{API}/other/messages/{ids[0]}", json={"text": "x"})):
        assert response.status_code == 404
    # a message of another conversation is unknown here
    chat.post(API, json={"id": "c2"})
    assert chat.put(f"{API}/c2/messages/{ids[0]}", json={"text": "x"}).status_code == 404
    assert chat.post(f"{API}/c2/messages/{ids[0]}/select").status_code == 404
    assert len(chat.get(f"{API}/c1").json["messages"]) == 2
    assert chat.get(f"{API}/c2").json["messages"] == []


def test_edit_while_a_reply_streams_is_409_and_tree_intact(chat, fake, tmp_path):
    ids = converse(chat, 1)
    gate = threading.Event()
    fake.push(Reply(parts=["slow", " reply"], hold=gate))
    response = chat.post(f"{API}/c1/messages", json={"text": "u2", "stream": True}, buffered=False)
    chunks = iter(response.response)
    while b"event: delta" not in next(chunks):
        pass
    for attempt in (chat.put(f"{API}/c1/messages/{ids[0]}", json={"text": "race"}),
                    chat.post(f"{API}/c1/messages/{ids[1]}/regenerate"),
                    chat.post(f"{API}/c1/messages", json={"text": "race"})):
        assert attempt.status_code == 409
        assert "still being written" in attempt.json["error"]["message"]
    gate.set()
    b"".join(chunks)
    assert active(chat) == [("user", "u1"), ("model", "Echo: u1"), ("user", "u2"), ("model", "slow reply")]
    assert chat.put(f"{API}/c1/messages/{ids[0]}", json={"text": "after"}).status_code == 201


@pytest.mark.slow
def test_two_edits_at_once_through_gunicorn(tmp_path, fake):
    """Two processes editing the same conversation at once: one wins, one gets 409, the tree is whole."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.servers import call, gunicorn

    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "k", "GEMINI_BASE_URL": fake.url}
    with gunicorn(env, workers=2) as base:
        url = f"{base}/api/v1/conversations"
        call("POST", url, {"id": "c1"})
        first = call("POST", f"{url}/c1/messages", {"text": "u1"})[1]
        fake.default = Reply(parts=["slow"], delay_s=0.5)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda n: call("PUT", f"{url}/c1/messages/{first['user_message']['id']}",
                                                   {"text": f"edit {n}"}), range(4)))
        codes = sorted(code for code, _ in results)
        assert codes.count(201) >= 1 and set(codes) <= {201, 409}
        status, conversation = call("GET", f"{url}/c1")
        versions = conversation["messages"][0]["siblings"]
        assert len(versions) == 1 + codes.count(201)
    from apsara.conversations.store import ConversationStore

    assert len(ConversationStore(tmp_path / "data").read("local", "c1")["messages"]) == 2 + 2 * codes.count(201)


def test_message_count_counts_the_active_path_and_is_documented(chat, fake):
    ids = converse(chat, 3)
    assert chat.get(f"{API}/c1").json["message_count"] == 6
    chat.put(f"{API}/c1/messages/{ids[0]}", json={"text": "u1 again"})
    conversation = chat.get(f"{API}/c1").json
    assert conversation["message_count"] == len(conversation["messages"]) == 2
    listed = chat.get(API).json["conversations"][0]
    assert listed["message_count"] == 2
    chat.post(f"{API}/c1/messages/{ids[0]}/select")  # the old branch comes back whole
    assert chat.get(f"{API}/c1").json["message_count"] == 6
    spec = chat.get("/api/v1/openapi.json").json
    described = spec["components"]["schemas"]["Conversation"]["properties"]["message_count"]["description"]
    assert "active path" in described
