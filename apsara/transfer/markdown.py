"""The active path of a conversation as Markdown, readable as it is."""
from __future__ import annotations

import json
import re

from ..conversations.tree import MessageTree

_FENCE = "```"


def _fence(body: str, language: str = "") -> str:
    # A fence longer than any run of backticks inside, so code holding ``` still renders.
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"


def _part(part: dict, link) -> str | None:
    kind = part.get("type")
    if kind == "text":
        return part.get("text", "")
    if kind == "thought":
        quoted = "\n".join("> " + line for line in part.get("text", "").splitlines())
        return f"> *Thinking*\n>\n{quoted}"
    if kind == "file":
        name = part.get("file_id", "")
        target = link(name) if link else name
        if part.get("mime_type", "").startswith("image/"):
            return f"![{name}]({target})"
        return f"[{name}]({target})"
    if kind == "code":
        return _fence(part.get("code", ""), (part.get("language") or "").lower())
    if kind == "code_result":
        return _fence(part.get("output", ""), "text")
    if kind == "function_call":
        return f"*Called `{part.get('name', '')}`* " + _fence(json.dumps(part.get("args", {}), indent=2), "json")
    if kind == "function_response":
        return f"*`{part.get('name', '')}` answered* " + _fence(json.dumps(part.get("response", {}), indent=2),
                                                               "json")
    return None


def render(document: dict, link=None) -> str:
    header = document["conversation"]
    lines = [f"# {header.get('title') or 'Conversation ' + header['id']}", ""]
    facts = [f"Model: {header.get('model', '')}"]
    if header.get("system_instruction"):
        facts.append("System instruction: " + header["system_instruction"].replace("\n", " "))
    lines += [f"*{fact}*  " for fact in facts] + [""]
    for message in MessageTree.of(document).active_path():
        who = "You" if message["role"] == "user" else f"Gemini ({message.get('model', '')})"
        status = message.get("status")
        note = f" — {status}" if message["role"] == "model" and status not in (None, "complete") else ""
        lines += [f"## {who}{note}", f"<sub>{message.get('created_at', '')}</sub>", ""]
        lines += [text for part in message.get("parts", ()) if (text := _part(part, link)) is not None]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
