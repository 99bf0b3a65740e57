"""A turn's Content dicts, converted only from where its context changed, equal the
whole conversion: over random conversations that grow, are edited, branch and shrink."""
import random
import sys

from apsara.gemini.convert import ContentsMemo, to_contents


def random_parts(rng: random.Random, role: str) -> list[dict]:
    kinds = ["text"] * 6 + ["thought", "signed_text"] + (["call", "result", "code"] if role == "model" else [])
    parts = []
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        kind = rng.choice(kinds)
        if kind == "text":
            parts.append({"type": "text", "text": f"t{rng.random():.6f}"})
        elif kind == "signed_text":
            parts.append({"type": "text", "text": "signed", "thought_signature": "c2ln"})
        elif kind == "thought":
            parts.append({"type": "thought", "text": "hmm"})
        elif kind == "call":
            parts.append({"type": "function_call", "name": "f", "args": {"n": rng.randint(0, 9)}, "call_id": "c1"})
        elif kind == "result":  # a user-role part inside a model turn: contents split and merge around it
            parts.append({"type": "function_response", "name": "f", "response": {"ok": True}, "call_id": "c1"})
        else:
            parts.append({"type": "code", "code": "print(1)", "language": "python"})
    if rng.random() < 0.05:
        parts.append({"type": "unknown-kind"})  # converts to nothing
    return parts


def random_turn(rng: random.Random) -> tuple[str, list[dict]]:
    role = rng.choice(["user", "model", "model"])
    return role, random_parts(rng, role)


def test_memo_equals_whole_conversion_as_conversations_change():
    rng = random.Random(20)
    memo = ContentsMemo(conversations=3)
    conversations = {key: [random_turn(rng) for _ in range(rng.randint(0, 30))] for key in "abcd"}
    for step in range(3000):
        key = rng.choice("abcd")
        turns = conversations[key]
        change = rng.random()
        if change < 0.6:  # a turn: the user's message and the reply
            turns = turns + [("user", random_parts(rng, "user")), ("model", random_parts(rng, "model"))]
        elif change < 0.75 and turns:  # an edit: the path from an earlier message on is another
            cut = rng.randrange(len(turns))
            turns = turns[:cut] + [random_turn(rng) for _ in range(rng.randint(0, 3))]
        elif change < 0.85 and turns:  # a message copied before a change: same content, another list
            index = rng.randrange(len(turns))
            role, parts = turns[index]
            turns = turns[:index] + [(role, [dict(p) for p in parts])] + turns[index + 1:]
        elif change < 0.9 and turns:  # the same message, now with another role next to it
            index = rng.randrange(len(turns))
            turns = turns[:index] + [("user" if turns[index][0] == "model" else "model", turns[index][1])] \
                + turns[index + 1:]
        conversations[key] = turns
        assert memo.contents(key, turns) == to_contents(turns), f"step {step}"


def test_contents_handed_out_are_not_changed_by_later_turns():
    memo = ContentsMemo()
    turns = [("user", [{"type": "text", "text": "hello"}]), ("model", [{"type": "text", "text": "hi"}])]
    first = memo.contents("k", turns)
    snapshot = to_contents(turns)
    # the next turn's user message follows a user-role part: it merges into a content of the last turn's
    turns = turns + [("model", [{"type": "function_response", "name": "f", "response": {}}]),
                     ("user", [{"type": "text", "text": "and?"}])]
    second = memo.contents("k", turns)
    assert second == to_contents(turns)
    assert first == snapshot


def test_the_newest_turns_inline_bytes_are_not_kept():
    memo = ContentsMemo()
    data = bytes(1024 * 1024)
    before = sys.getrefcount(data)
    turns = [("user", [{"type": "text", "text": "hello"}]), ("model", [{"type": "text", "text": "hi"}]),
             ("user", [{"type": "text", "text": "and this?"}, {"type": "inline", "mime_type": "image/png", "data": data}])]
    contents = memo.contents("k", turns)
    assert contents[-1]["parts"][1]["inline_data"]["data"] is data
    del contents, turns
    assert sys.getrefcount(data) == before


def test_a_message_whose_parts_are_made_afresh_but_equal_keeps_its_content():
    """A message with a file has its parts made again each turn (its upload looked up): its
    Content dict, and the JSON it was sent as, are kept all the same."""
    memo = ContentsMemo()

    def with_file():  # a new list each time, as the attachments' lookup makes it
        return [{"type": "uri", "uri": "https://example.test/files/a1", "mime_type": "application/pdf"},
                {"type": "text", "text": "read this"}]

    turns = [("user", with_file()), ("model", [{"type": "text", "text": "done"}]),
             ("user", [{"type": "text", "text": "and?"}])]
    first = memo.contents("k", turns)
    turns = [("user", with_file())] + turns[1:] + [("model", [{"type": "text", "text": "so"}]),
                                                    ("user", [{"type": "text", "text": "more"}])]
    second = memo.contents("k", turns)
    assert second == to_contents(turns)
    assert second[0] is first[0]  # (the last kept message is converted again: what follows may merge with it)
