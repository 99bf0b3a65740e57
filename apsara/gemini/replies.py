"""Turning Gemini's answers (whole, or a stream of chunks) into one stored reply.

`ReplyBuilder.feed()` takes each response as it arrives and returns the events
it implies (`delta`, `thought`, `part`, `grounding`) in stored form (thought
signatures kept, so replaying the events rebuilds exactly these parts; a bare
signature is a `delta` with empty text that clients never see); `outcome()` says
what the finished reply is: complete, blocked, interrupted, or an error that
explains itself.

A stream is cut when it ends without a finishReason (Gemini always sends one in
its last chunk): what arrived is kept as `interrupted`, never as a complete
reply, so it is never sent back as context. A reply whose whole output budget
went to thinking (MAX_TOKENS, no parts) is complete and empty: the client sees
why from its finish_reason.
"""
from __future__ import annotations

from typing import Callable

from google.genai import types

from ..errors import ApiError
from ..conversations.parts import apply_event
from .convert import from_sdk_part
from .metering import usage_of

BLOCKING_FINISH = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY",
                   "LANGUAGE", "IMAGE_PROHIBITED_CONTENT"}


def _value(enum_or_str):
    return getattr(enum_or_str, "value", enum_or_str)


def grounding_of(meta: types.GroundingMetadata) -> dict | None:
    queries = list(meta.web_search_queries or [])
    sources = []
    for chunk in meta.grounding_chunks or []:
        web = chunk.web
        if web is not None and web.uri:
            sources.append({"uri": web.uri, "title": web.title or web.domain or web.uri})
    if not queries and not sources:
        return None
    return {"queries": queries, "sources": sources}


def public(part: dict) -> dict:
    return {k: v for k, v in part.items() if k != "thought_signature"}


class ReplyBuilder:
    def __init__(self, on_inline: Callable[[dict], dict | None] | None = None):
        self.reply: dict = {"parts": []}
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.grounding: dict | None = None
        self.block_reason: str | None = None
        self.safety_ratings: list | None = None
        self.cut = False  # the last stream ended without a finish reason
        self._on_inline = on_inline

    def begin_request(self) -> None:
        """A new request to Gemini (a function-call round): its own finish reason counts."""
        self.finish_reason = None
        self.cut = False

    def end_stream(self) -> None:
        """The stream closed: without a finish reason (or a block) it was cut short."""
        self.cut = self.finish_reason is None and self.block_reason is None

    def feed(self, response: types.GenerateContentResponse) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            self.block_reason = _value(feedback.block_reason)
        if response.usage_metadata is not None:
            self.usage = usage_of(response.usage_metadata)
        if not response.candidates:
            return events
        candidate = response.candidates[0]
        for sdk_part in (candidate.content.parts or []) if candidate.content else []:
            part = from_sdk_part(sdk_part)
            if part is None:
                continue
            if part["type"] == "inline":
                part = self._on_inline(part) if self._on_inline else None
                if part is None:
                    continue
            events.append(self.add(part))
        if candidate.finish_reason:
            self.finish_reason = _value(candidate.finish_reason)
        if candidate.safety_ratings:
            self.safety_ratings = [{"category": _value(r.category), "probability": _value(r.probability),
                                    **({"blocked": True} if r.blocked else {})}
                                   for r in candidate.safety_ratings]
        if candidate.grounding_metadata is not None:
            grounding = grounding_of(candidate.grounding_metadata)
            if grounding:
                self.grounding = grounding
                events.append(("grounding", grounding))
        return events

    @property
    def parts(self) -> list[dict]:
        return self.reply["parts"]

    def add(self, part: dict) -> tuple[str, dict]:
        """Add one part; returns its event."""
        if part["type"] in ("text", "thought"):
            event = ("delta" if part["type"] == "text" else "thought", {k: v for k, v in part.items() if k != "type"})
        else:
            event = ("part", part)
        apply_event(self.reply, *event)
        return event

    def has_content(self) -> bool:
        return any(p["type"] != "thought" and (p["type"] != "text" or p["text"]) for p in self.parts)

    def outcome(self) -> tuple[dict, ApiError | None]:
        """(reply fields to store, the error if the reply failed)."""
        fields = {"parts": self.parts, "finish_reason": self.finish_reason, "usage": self.usage,
                  "grounding": self.grounding}
        if self.safety_ratings:
            fields["safety_ratings"] = self.safety_ratings
        if self.block_reason:
            return {**fields, "parts": [], "status": "blocked", "finish_reason": self.block_reason}, None
        if self.cut:
            return {**fields, "status": "interrupted"}, ApiError(
                502, "Gemini's stream ended before the reply was finished (no finish reason); "
                     "what arrived is kept but not used as context: regenerate the reply")
        if self.has_content():
            return {**fields, "status": "complete"}, None
        if self.finish_reason in BLOCKING_FINISH:
            return {**fields, "status": "blocked"}, None
        if self.finish_reason == "MAX_TOKENS":
            # Thinking used the whole output budget: an empty answer, not a failure.
            return {**fields, "status": "complete"}, None
        error = ApiError(502, f"Gemini returned an empty reply (finish reason {self.finish_reason})")
        return {**fields, "status": "error"}, error
