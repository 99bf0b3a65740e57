"""ChatGPT's data export (`conversations.json`): a list of conversations, each a
`mapping` of nodes with parent and children, and the `current_node` the user
last looked at.

Only what the user saw becomes a message: real user and assistant turns that
finished. The placeholder root, hidden system and context messages, tool
calls and tool results, reasoning, empty and unfinished messages are skipped
(and counted); their children move up to the nearest kept message. Citation
markers (【6†source】) become links to their sources, as ChatGPT showed them.
"""
from __future__ import annotations

from . import Imported, Node, build_tree
from .common import RefusedValue, as_text, epoch_seconds, iso_from_epoch

_SHOWN_CONTENT = ("text", "multimodal_text")


def detect(document) -> bool:
    return isinstance(document, list) and any(isinstance(entry, dict) and "mapping" in entry
                                              for entry in document)


def _with_citations(text: str, metadata: dict) -> str:
    """Replace each cited span with ` ([title](url))`, from the last one back so offsets stay true."""
    citations = [c for c in metadata.get("citations") or () if isinstance(c, dict)]
    spans = []
    for citation in citations:
        start, end = citation.get("start_ix"), citation.get("end_ix")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
            continue
        source = citation.get("metadata") if isinstance(citation.get("metadata"), dict) else {}
        url, title = as_text(source.get("url")), as_text(source.get("title")) or as_text(source.get("url"))
        spans.append((start, end, f" ([{title}]({url}))" if url else ""))
    for start, end, link in sorted(spans, reverse=True):
        text = text[:start] + link + text[end:]
    return text


def _message(raw) -> dict | None:
    """The message a user saw at this node, or None when the node is skipped."""
    if not isinstance(raw, dict):
        return None
    author = raw.get("author") if isinstance(raw.get("author"), dict) else {}
    role = author.get("role")
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    content = raw.get("content") if isinstance(raw.get("content"), dict) else {}
    if role not in ("user", "assistant") or metadata.get("is_visually_hidden_from_conversation"):
        return None
    if raw.get("recipient", "all") != "all" or raw.get("status", "finished_successfully") != "finished_successfully":
        return None
    if content.get("content_type") not in _SHOWN_CONTENT:
        return None
    parts = content.get("parts") if isinstance(content.get("parts"), list) else ()
    text = "".join(part for part in parts if isinstance(part, str))
    if role == "assistant":
        text = _with_citations(text, metadata)
    if not text.strip():
        return None
    message = {"role": "user" if role == "user" else "model",
               "created_at": iso_from_epoch(raw.get("create_time"), "create_time"),
               "parts": [{"type": "text", "text": text}]}
    if role == "assistant":
        finish = metadata.get("finish_details") if isinstance(metadata.get("finish_details"), dict) else {}
        message.update(status="complete", model=as_text(metadata.get("model_slug")) or "chatgpt",
                       finish_reason="STOP" if finish.get("type") in (None, "stop") else
                       as_text(finish.get("type")).upper()[:40])
    return message


def _time(raw) -> float | None:
    return epoch_seconds(raw.get("create_time"), "create_time") if isinstance(raw, dict) else None


def convert(entry) -> Imported | None:
    """One conversation of the export; None when it has nothing a user saw. RefusedValue
    when it holds a time that cannot be stored."""
    mapping = entry.get("mapping") if isinstance(entry, dict) else None
    if not isinstance(mapping, dict):
        return None
    nodes, skipped = {}, 0
    for key, node in mapping.items():
        if not isinstance(node, dict):
            continue
        raw = node.get("message")
        try:  # a skipped node's time is never used: only a kept one's is checked
            message = _message(raw)
            time = _time(raw) if message is not None else None
        except RefusedValue as refused:
            raise refused.under(f"mapping.{key}.message") from None
        if raw is not None and message is None:
            skipped += 1  # a message that was there but not shown; the empty root is no message
        parent = node.get("parent")
        nodes[str(key)] = Node(str(key), parent if isinstance(parent, str) else None, time, message)
    current = entry.get("current_node")
    messages, active = build_tree(nodes, current if isinstance(current, str) else None)
    if not messages:
        return None
    created = iso_from_epoch(entry.get("create_time"), "create_time")
    updated = (iso_from_epoch(entry.get("update_time"), "update_time") if entry.get("update_time")
               else messages[-1]["created_at"])
    title = as_text(entry.get("title")).strip()[:200]
    source_id = entry.get("conversation_id") or entry.get("id")
    return Imported(header={"title": title, "title_source": "user" if title else None,
                            "created_at": created, "updated_at": max(updated, created)},
                    messages=messages, active=active, id=source_id if isinstance(source_id, str) else None,
                    skipped_messages=skipped)
