"""Message parts as stored, and reply events: how each event changes a reply.

`apply_event` is the one place a reply's parts grow. The reply builder uses it
while Gemini streams, and reading a conversation uses it to replay checkpointed
events, so a replayed reply has exactly the parts the streaming one had.
"""
from __future__ import annotations

# Stored with a part for Gemini's sake, never shown to clients.
PRIVATE_PART_FIELDS = ("thought_signature", "gemini_file")


def merge_part(parts: list[dict], new: dict) -> bool:
    """Append `new` to `parts`, merging stream text into the previous part of its kind.

    Returns True when it merged. A signed part is never merged into another: its
    signature goes back on a part of its own, as Gemini sent it (Gemini 3 often
    signs an empty text part at the end of a stream).
    """
    if (parts and new["type"] in ("text", "thought") and parts[-1]["type"] == new["type"]
            and not new.get("thought_signature")):
        parts[-1]["text"] += new["text"]
        return True
    parts.append(new)
    return False


def apply_event(reply: dict, name: str, data) -> None:
    """One event's change to a reply. Events that carry no content change nothing."""
    if name in ("delta", "thought"):
        merge_part(reply.setdefault("parts", []), {"type": "text" if name == "delta" else "thought", **data})
    elif name == "part":
        reply.setdefault("parts", []).append(dict(data))
    elif name == "grounding":
        reply["grounding"] = data


def public_part(part: dict) -> dict:
    if "thought_signature" not in part and "gemini_file" not in part:
        return part
    return {k: v for k, v in part.items() if k not in PRIVATE_PART_FIELDS}


def public_event_data(name: str, data, link=None):
    """An event's data as a client sees it: no signatures, file parts with a fresh URL."""
    if name in ("delta", "thought"):
        return {"text": data["text"]}
    if name == "part":
        shown = public_part(data)
        if link is not None and shown.get("type") == "file":
            shown = {**shown, "url": link(shown["file_id"])}
        return shown
    return data
