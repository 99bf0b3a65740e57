"""Explicit context caching, where it pays.

A conversation whose system instruction and attached files are large sends the
same prefix every turn. When that prefix (system instruction, tools, and the
history up to the last message with a file, not counting the newest message) is
at least the model's minimum cacheable size, it is put in a Gemini cache once
and each turn sends only what follows it with `cached_content`. The record lives
in the conversation file (`_cache` in its header): it names the cache, what it
holds (a hash of model, tools, system instruction and message ids) and when it
expires. A changed prefix (an edit above it, a new system instruction...) or an
expired cache makes a new one; deleting the conversation deletes its cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone

from google.genai import types

from . import uploads
from .client import GeminiClient
from .convert import to_contents

log = logging.getLogger("apsara.caching")
CACHE_TTL_S = 3600
EXPIRY_MARGIN = timedelta(minutes=5)


def min_cache_tokens(model_id: str) -> int:
    """Gemini's smallest cacheable prefix: 4,096 tokens on Pro models, 1,024 elsewhere."""
    return 4096 if "pro" in model_id else 1024


def prefix_length(files: list[tuple[int, dict]], messages: int) -> int:
    """How many of a context's `messages` belong to the cacheable prefix: up to the last
    one holding a file, never the newest. `files`: its file parts as (message index, part)."""
    return max((index + 1 for index, _ in files if index < messages - 1), default=0)


def _key(model_id: str, config: types.GenerateContentConfig, ids: list[str]) -> str:
    tools = [t.model_dump(exclude_none=True, mode="json") for t in (config.tools or [])]
    raw = json.dumps([model_id, str(config.system_instruction or ""), tools, ids], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _alive(record: dict) -> bool:
    try:
        expires = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return False
    return expires - EXPIRY_MARGIN > datetime.now(timezone.utc)


class ContextCache:
    def __init__(self, gemini: GeminiClient, min_tokens: int | None = None):
        self.gemini = gemini
        self._min_tokens = min_tokens  # tests lower it

    def plan(self, record: dict | None, model_id: str, config: types.GenerateContentConfig,
             turns: list[tuple[str, list[dict]]], context: list[dict], files: list[tuple[int, dict]],
             count) -> tuple[dict | None, dict | None]:
        """(cache to use or None, record to save or None when unchanged).

        `turns` are the context's (role, parts) ready to send, `files` its file parts as
        (message index, part); `count(contents)` asks Gemini for a token count and is
        called once per new prefix.
        """
        length = prefix_length(files, len(context))
        if length == 0 and not config.system_instruction:
            return None, None
        key = _key(model_id, config, [m["id"] for m in context[:length]])
        if record and record.get("key") == key:
            if record.get("too_small"):
                return None, None
            if record.get("name") and _alive(record):
                return record, None
        minimum = self._min_tokens or min_cache_tokens(model_id)
        chars = len(str(config.system_instruction or "")) + sum(
            len(p.get("text", "")) for m in context[:length] for p in m["parts"])
        if length == 0 and chars < minimum:  # a prefix ends at a file: length 0 holds none
            return None, None  # no token is shorter than a character: too small, no need to ask
        prefix = to_contents(turns[:length])
        head = ([{"role": "user", "parts": [{"text": str(config.system_instruction)}]}]
                if config.system_instruction else [])
        tokens = count(head + prefix) if (head or prefix) else 0
        if tokens < minimum:
            return None, {"key": key, "too_small": True, "tokens": tokens}
        try:
            made = uploads.create_cache(self.gemini, model_id, prefix, config, CACHE_TTL_S)
        except Exception as exc:  # caching is an optimisation: never fail a turn for it
            log.warning("context cache not created: %s", type(exc).__name__)
            return None, {"key": key, "too_small": True, "tokens": tokens}
        self.forget(record)
        fresh = {"key": key, "length": length, "tokens": tokens, **made}
        return fresh, fresh

    def forget(self, record: dict | None) -> None:
        """Delete a cache we no longer use (best effort: it expires anyway)."""
        if record and record.get("name") and self.gemini.configured:
            try:
                uploads.delete_cache(self.gemini, record["name"])
            except Exception:
                pass

    @staticmethod
    def apply(record: dict, turns: list[tuple[str, list[dict]]], config: types.GenerateContentConfig,
              convert=to_contents):
        """The request for a turn that uses the cache: only what follows the prefix, made
        Content dicts by `convert`."""
        contents = convert(turns[record["length"]:])
        # Gemini refuses system_instruction, tools or tool_config next to cached_content: they are in it.
        config = config.model_copy(update={"cached_content": record["name"], "system_instruction": None,
                                           "tools": None, "tool_config": None})
        return contents, config
