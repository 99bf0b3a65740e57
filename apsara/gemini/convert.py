"""Between the service's message parts and google-genai's types, in one place.

Stored parts are the API's part types plus what Gemini needs back verbatim
(`thought_signature`, base64). Model parts go back exactly as they came, so
Gemini 3 finds its signatures; text chunks of a stream are merged into one part
unless that would drop or mix a signature.
"""
from __future__ import annotations

import base64
import bisect
import operator

from google.genai import types

from ..recent import Recent
from .catalog import ModelInfo
from .wire import ContentDict


def _signature(part: dict) -> bytes | None:
    raw = part.get("thought_signature")
    return base64.b64decode(raw) if raw else None


def to_sdk_part(part: dict) -> dict | None:
    """A stored part -> the SDK's Part, as the dict form the SDK validates itself.

    Dicts, not types.Part: the SDK validates its whole request anyway, and
    building pydantic objects first doubles that cost (~30 ms for 1,000 parts).
    """
    kind = part.get("type")
    if kind in ("text", "thought"):
        out = {"text": part.get("text", "")}
        if kind == "thought":
            out["thought"] = True
    elif kind == "code":
        out = {"executable_code": {"language": (part.get("language") or "PYTHON").upper(),
                                   "code": part.get("code", "")}}
    elif kind == "code_result":
        out = {"code_execution_result": {"outcome": part.get("outcome") or "OUTCOME_OK",
                                         "output": part.get("output", "")}}
    elif kind == "function_call":
        out = {"function_call": {"name": part["name"], "args": part.get("args") or {}}}
        if part.get("call_id"):
            out["function_call"]["id"] = part["call_id"]
    elif kind == "function_response":
        out = {"function_response": {"name": part["name"], "response": part.get("response") or {}}}
        if part.get("call_id"):
            out["function_response"]["id"] = part["call_id"]
    elif kind == "inline":  # bytes resolved by the caller (files, generated images)
        out = {"inline_data": {"mime_type": part["mime_type"], "data": part["data"]}}
    elif kind == "uri":
        out = {"file_data": {"file_uri": part["uri"], "mime_type": part["mime_type"]}}
    else:
        return None
    signature = _signature(part)
    if signature:
        out["thought_signature"] = signature
    return out


def to_contents(turns: list[tuple[str, list[dict]]]) -> list[dict]:
    """(role, parts) turns, oldest first -> Content dicts (each keeps the JSON it is first
    sent as: wire.py).

    A stored reply that called functions holds the calls and their results in
    order; Gemini wants each result in a user turn between the model's turns, so
    function_response parts are given the user role. Adjacent turns of one role merge.
    """
    return _converted(turns, 0)[0]


def _converted(turns: list[tuple[str, list[dict]]], first: int) -> tuple[list[dict], list[int], list[int]]:
    """to_contents() of turns[first:], and where it may be cut: the turns whose first part
    began a content, with that content's index."""
    contents: list[dict] = []
    cut_turns, cut_contents = [], []
    last_role, last_parts = None, []  # the newest content's, kept at hand: 1,000 turns are walked
    for index in range(first, len(turns)):
        role, parts = turns[index]
        first_part = True
        for part in parts:
            kind = part.get("type")
            if kind == "text" and not part.get("thought_signature"):
                sdk_part = {"text": part.get("text", "")}  # most parts: no call for them
            else:
                sdk_part = to_sdk_part(part)
                if sdk_part is None:
                    continue
            part_role = "user" if kind == "function_response" else role
            if part_role == last_role:
                last_parts.append(sdk_part)
            else:
                if first_part:
                    cut_turns.append(index)
                    cut_contents.append(len(contents))
                last_role, last_parts = part_role, [sdk_part]
                contents.append(ContentDict(role=part_role, parts=last_parts))
            first_part = False
    return contents, cut_turns, cut_contents


class ContentsMemo:
    """Each conversation's Content dicts as its last turn sent them: a turn converts only
    what changed since.

    A turn's context is the one before it plus a few messages, and the parts lists of
    the others are the very lists the last turn converted (the store's cached messages
    are never changed in place; one that changes is copied). So the turns are compared
    by identity (a message whose parts are made afresh, by equality) up to the first
    that differs, and conversion starts again at the last unchanged turn that began a
    content of its own: what comes before it cannot merge with what follows. At 1,000
    messages that is ~0.05 ms instead of ~0.4 ms. The contents handed out are shared
    with the next turn's, with the JSON each was sent as (wire.py): nobody changes a
    request's contents in place."""

    def __init__(self, conversations: int = 64):
        self._kept = Recent(conversations)  # key -> (turns, contents, cut turns, cut contents)

    def forget(self, key) -> None:
        """Let go of what is kept for `key`: a deleted conversation's, or a list no longer sent."""
        self._kept.forget(key)

    def contents(self, key, turns: list[tuple[str, list[dict]]]) -> list[dict]:
        kept = self._kept.get(key)
        start, contents, cut_turns, cut_contents = 0, [], [], []
        if kept is not None:
            old_turns, old_contents, old_cut_turns, old_cut_contents = kept
            # The very (role, parts) pairs the last turn had, as the planner keeps them, compare
            # in C; from the first pair made afresh on, role and parts are compared one by one.
            identical = list(map(operator.is_, turns, old_turns))
            same = identical.index(False) if False in identical else len(identical)
            # A message with files has its parts made afresh each turn (their uploads looked up):
            # equal parts are the same message.
            for (role, parts), (old_role, old_parts) in zip(turns[same:], old_turns[same:]):
                if role != old_role or (parts is not old_parts and parts != old_parts):
                    break
                same += 1
            cut = bisect.bisect_right(old_cut_turns, same - 1) - 1  # the last cut at an unchanged turn
            if cut >= 0:
                start, kept_count = old_cut_turns[cut], old_cut_contents[cut]
                contents, cut_turns, cut_contents = \
                    old_contents[:kept_count], old_cut_turns[:cut], old_cut_contents[:cut]
        fresh, fresh_cut_turns, fresh_cut_contents = _converted(turns, start)
        offset = len(contents)
        contents = contents + fresh
        cut_turns = cut_turns + fresh_cut_turns
        cut_contents = cut_contents + [index + offset for index in fresh_cut_contents]
        # The newest turn is left out of what is kept: it may carry a file's bytes inline
        # (up to 15 MB), and the next turn reads it back from the store as another list.
        cut = bisect.bisect_right(cut_turns, len(turns) - 1) - 1
        kept_turns, kept_contents = (cut_turns[cut], cut_contents[cut]) if cut >= 0 else (0, 0)
        self._kept.put(key, (turns[:kept_turns], contents[:kept_contents], cut_turns[:cut], cut_contents[:cut]))
        return contents


def _unicode(text: str) -> str:
    """Text safe to store and send on: the SDK's JSON parser lets a lone surrogate
    escape ("\\ud800") through, which no JSON writer will write back."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def from_sdk_part(part: types.Part) -> dict | None:
    """One SDK response part -> a stored part (None for parts we do not keep)."""
    out: dict | None = None
    if part.text == "" and not part.thought_signature:
        return None  # an empty, unsigned stream chunk carries nothing
    if part.text is not None:
        out = {"type": "thought" if part.thought else "text", "text": _unicode(part.text)}
    elif part.executable_code is not None:
        language = part.executable_code.language
        out = {"type": "code", "language": (getattr(language, "value", language) or "PYTHON").lower(),
               "code": part.executable_code.code or ""}
    elif part.code_execution_result is not None:
        outcome = part.code_execution_result.outcome
        out = {"type": "code_result", "outcome": getattr(outcome, "value", outcome) or "OUTCOME_OK",
               "output": part.code_execution_result.output or ""}
    elif part.function_call is not None:
        call = part.function_call
        out = {"type": "function_call", "name": call.name, "args": dict(call.args or {})}
        if call.id:
            out["call_id"] = call.id
    elif part.inline_data is not None:
        out = {"type": "inline", "mime_type": part.inline_data.mime_type or "application/octet-stream",
               "data": part.inline_data.data or b""}
    elif part.thought_signature is None:
        return None
    else:
        out = {"type": "text", "text": ""}  # a bare signature, kept so it goes back
    if part.thought_signature:
        out["thought_signature"] = base64.b64encode(part.thought_signature).decode()
    return out


_LEVELS = {"minimal": types.ThinkingLevel.MINIMAL, "low": types.ThinkingLevel.LOW,
           "medium": types.ThinkingLevel.MEDIUM, "high": types.ThinkingLevel.HIGH}


def thinking_config(model: ModelInfo, settings: dict) -> types.ThinkingConfig | None:
    """thinking_level for models that take levels (3.x), thinking_budget for 2.5; never both."""
    if model.thinking is None:
        return None
    config = {}
    if settings.get("include_thoughts") is not None:
        config["include_thoughts"] = settings["include_thoughts"]
    if "levels" in model.thinking and settings.get("thinking_level"):
        config["thinking_level"] = _LEVELS[settings["thinking_level"]]
    elif "budget" in model.thinking and settings.get("thinking_budget") is not None:
        config["thinking_budget"] = settings["thinking_budget"]
    return types.ThinkingConfig(**config) if config else None


GENERATION_KEYS = ("temperature", "top_p", "top_k", "max_output_tokens", "stop_sequences", "seed",
                   "response_mime_type", "response_schema", "safety_settings")


def generation_config(model: ModelInfo, settings: dict, system_instruction: str,
                      tools: list[types.Tool] | None = None, **extra) -> types.GenerateContentConfig:
    config = {k: settings[k] for k in GENERATION_KEYS if settings.get(k) not in (None, [])}
    if system_instruction:
        config["system_instruction"] = system_instruction
    thinking = thinking_config(model, settings)
    if thinking is not None:
        config["thinking_config"] = thinking
    if tools:
        config["tools"] = tools
    config.update(extra)
    return types.GenerateContentConfig(**config)
