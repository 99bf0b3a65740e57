"""Open WebUI's chat export: a list of chat records, each with `chat.history`
(`messages` by id with `parentId`, and the `currentId` of the active tip), or
only a flat `chat.messages` list in older records.

An assistant answer is taken from the `message` items of its structured
`output` when it has one, else from `content` with the `<details>` blocks
(reasoning, tool runs) cut out; the reasoning is kept as a thought part and
tool runs are left out, as they are not part of the answer.
"""
from __future__ import annotations

import html
import re

from . import Imported, Node, build_tree
from .common import RefusedValue, as_text, epoch_seconds, iso_from_epoch

_DETAILS = re.compile(r"<details\b([^>]*)>(.*?)</details>", re.DOTALL | re.IGNORECASE)
_SUMMARY = re.compile(r"<summary\b[^>]*>.*?</summary>", re.DOTALL | re.IGNORECASE)


def detect(document) -> bool:
    return isinstance(document, list) and any(
        isinstance(entry, dict) and isinstance(entry.get("chat"), dict) for entry in document)


def _output_texts(items, kind: str) -> str:
    texts = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != kind:
            continue
        pieces = [piece for key in ("content", "summary") if isinstance(item.get(key), list) for piece in item[key]]
        for piece in pieces:
            if isinstance(piece, dict) and isinstance(piece.get("text"), str):
                texts.append(piece["text"])
    return "\n".join(texts)


def _answer_and_reasoning(raw: dict) -> tuple[str, str]:
    output = raw.get("output")
    if isinstance(output, list) and output:
        return _output_texts(output, "message"), _output_texts(output, "reasoning")
    content = as_text(raw.get("content"))
    reasoning = [html.unescape(_SUMMARY.sub("", body)).strip()
                 for attributes, body in _DETAILS.findall(content) if 'type="reasoning"' in attributes]
    return _DETAILS.sub("", content).strip(), "\n".join(r for r in reasoning if r)


def _message(raw, default_model: str) -> dict | None:
    if not isinstance(raw, dict) or raw.get("role") not in ("user", "assistant"):
        return None
    if raw["role"] == "user":
        text, reasoning = as_text(raw.get("content")), ""
    else:
        if raw.get("done") is False:
            return None  # an answer that never finished
        text, reasoning = _answer_and_reasoning(raw)
    if not text.strip():
        return None
    parts = ([{"type": "thought", "text": reasoning}] if reasoning else []) + [{"type": "text", "text": text}]
    message = {"role": "user" if raw["role"] == "user" else "model",
               "created_at": iso_from_epoch(raw.get("timestamp"), "timestamp"), "parts": parts}
    if raw["role"] == "assistant":
        message.update(status="complete", finish_reason="STOP",
                       model=as_text(raw.get("model")) or default_model or "open-webui")
    return message


def _time(raw) -> float | None:
    return epoch_seconds(raw.get("timestamp"), "timestamp") if isinstance(raw, dict) else None


def _history(chat: dict) -> tuple[dict, str | None, dict[str, str]]:
    """Messages by id, the active tip, and where each message is in the file (for a refusal's
    path); a flat list is one straight branch."""
    history = chat.get("history")
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        current = history.get("currentId")
        places = {key: f"chat.history.messages.{key}" for key in history["messages"]}
        return history["messages"], current if isinstance(current, str) else None, places
    flat = [(n, m) for n, m in enumerate(chat.get("messages") or []) if isinstance(m, dict)]
    messages, places, parent = {}, {}, None
    for n, raw in flat:
        message_id = as_text(raw.get("id")) or f"m{n}"
        messages[message_id] = {**raw, "parentId": parent}
        places[message_id] = f"chat.messages.{n}"
        parent = message_id
    return messages, parent, places


def convert(entry) -> Imported | None:
    chat = entry.get("chat") if isinstance(entry, dict) else None
    if not isinstance(chat, dict):
        return None
    models = chat.get("models") if isinstance(chat.get("models"), list) else []
    default_model = next((m for m in models if isinstance(m, str)), "")
    raw_messages, current, places = _history(chat)
    nodes, skipped = {}, 0
    for key, raw in raw_messages.items():
        try:  # a skipped message's time is never used: only a kept one's is checked
            message = _message(raw, default_model)
            time = _time(raw) if message is not None else None
        except RefusedValue as refused:
            raise refused.under(places[key]) from None
        skipped += message is None
        parent = raw.get("parentId") if isinstance(raw, dict) else None
        nodes[str(key)] = Node(str(key), parent if isinstance(parent, str) else None, time, message)
    messages, active = build_tree(nodes, current)
    if not messages:
        return None
    created = iso_from_epoch(entry.get("created_at"), "created_at")
    updated = (iso_from_epoch(entry.get("updated_at"), "updated_at") if entry.get("updated_at")
               else messages[-1]["created_at"])
    title = (as_text(entry.get("title")) or as_text(chat.get("title"))).strip()[:200]
    source_id = entry.get("id")
    return Imported(header={"title": title, "title_source": "user" if title else None,
                            "created_at": created, "updated_at": max(updated, created),
                            "archived": entry.get("archived") is True, "pinned": entry.get("pinned") is True},
                    messages=messages, active=active, id=source_id if isinstance(source_id, str) else None,
                    skipped_messages=skipped)
