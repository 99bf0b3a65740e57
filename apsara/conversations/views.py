"""What a client sees of a conversation: its summary, its messages on the active path
with their versions, and the cursor of a listing's next page. Bookkeeping ("_" keys:
a reply's writer and events, the context-cache record) never shows.
"""
from __future__ import annotations

import base64
import json

from ..errors import ApiError
from .parts import public_part
from .store import ID_PATTERN
from .tree import MessageTree
from .writers import writer_alive

# Conversations stored before these fields existed read as if they had these values.
HEADER_DEFAULTS = {"title_source": None, "archived": False, "pinned": False, "temporary": False}


def encode_cursor(position: tuple[int, str]) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A position's time goes to SQL as a 64-bit integer: anything past that is no cursor we gave out.
_INT64 = range(-2 ** 63, 2 ** 63)


def _is_position(mtime_ns, conversation_id) -> bool:
    # bool is an int to isinstance, and JSON's true would pass for one.
    return (type(mtime_ns) is int and mtime_ns in _INT64
            and isinstance(conversation_id, str) and ID_PATTERN.fullmatch(conversation_id) is not None)


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        mtime_ns, conversation_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not _is_position(mtime_ns, conversation_id):
            raise ValueError
        return mtime_ns, conversation_id
    except (ValueError, TypeError, UnicodeError):
        raise ApiError(422, "cursor is not one this server gave out",
                       {"cursor": ["not a valid cursor"]}) from None


def message_text(message: dict) -> str:
    return "".join(p.get("text", "") for p in message.get("parts", ()) if p.get("type") == "text")


def _public_parts(parts: list[dict], link) -> list[dict]:
    shown = []
    for part in parts:
        part = public_part(part)
        if link is not None and part.get("type") == "file":
            part = {**part, "url": link(part["file_id"])}
        shown.append(part)
    return shown


def message_view(message: dict, tree: MessageTree | None = None, link=None) -> dict:
    """A stored message as the API shows it. `link(file_id)` gives file parts a fresh signed URL."""
    # "_" keys are bookkeeping (who writes a reply, its events), not API.
    view = {k: v for k, v in message.items() if not k.startswith("_")}
    if view.get("status") == "streaming" and not writer_alive(message):
        view["status"] = "interrupted"  # its writer died; the next change records it so
    view["parts"] = _public_parts(message.get("parts", ()), link)
    view["text"] = message_text(message)
    view["siblings"] = tree.siblings(message) if tree is not None else [message["id"]]
    return view


def summary_view(header: dict) -> dict:
    # "_" keys (the context-cache record) are bookkeeping, not API.
    view = {k: v for k, v in header.items() if not k.startswith("_")}
    for key, default in HEADER_DEFAULTS.items():
        view.setdefault(key, default)
    if view["title_source"] is None and view.get("title"):
        view["title_source"] = "user"  # a title given before sources were recorded was a user's
    return view


def conversation_view(document: dict, with_messages: bool = True, link=None) -> dict:
    view = summary_view(document["conversation"])
    if with_messages:
        tree = MessageTree.of(document)
        view["messages"] = [message_view(m, tree, link) for m in tree.active_path()]
    return view
