"""The Gemini Files API: large or reused files are uploaded once and referenced.

An upload lives 48 hours at Google. `upload()` returns the reference to keep
(`name`, `uri`, `mime_type`, `expires_at`); `usable()` says whether a kept one
can still be sent (with an hour's margin, so it does not expire mid-turn).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from google.genai import types

from .client import GeminiClient

MARGIN = timedelta(hours=1)
PROCESSING_WAIT_S = 120.0


def usable(ref: dict | None) -> bool:
    if not ref or not ref.get("uri"):
        return False
    try:
        expires = datetime.fromisoformat(ref["expires_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return False
    return expires - MARGIN > datetime.now(timezone.utc)


def upload(client: GeminiClient, source, mime_type: str, display_name: str) -> dict:
    """`source`: a path, or a seekable reader (the database store's bytes, streamed)."""
    sdk = client.sdk
    uploaded = sdk.files.upload(file=str(source) if isinstance(source, Path) else source, config=types.UploadFileConfig(
        mime_type=mime_type, display_name=display_name[:100] or None))
    # Video is processed before it can be used; wait for it, within reason.
    deadline = time.monotonic() + PROCESSING_WAIT_S
    while uploaded.state == types.FileState.PROCESSING and time.monotonic() < deadline:
        time.sleep(1.0)
        uploaded = sdk.files.get(name=uploaded.name)
    if uploaded.state == types.FileState.FAILED:
        raise RuntimeError(f"Gemini could not process the file {display_name!r}")
    expires = uploaded.expiration_time or (datetime.now(timezone.utc) + timedelta(hours=48))
    return {"name": uploaded.name, "uri": uploaded.uri, "mime_type": uploaded.mime_type or mime_type,
            "expires_at": expires.isoformat()}


def create_cache(client: GeminiClient, model_id: str, contents: list[dict], config: types.GenerateContentConfig,
                 ttl_s: int) -> dict:
    """An explicit context cache of the system instruction, tools and `contents`."""
    cache = client.sdk.caches.create(model=model_id, config=types.CreateCachedContentConfig(
        contents=contents or None, system_instruction=config.system_instruction, tools=config.tools,
        tool_config=config.tool_config, ttl=f"{int(ttl_s)}s"))
    expires = cache.expire_time or (datetime.now(timezone.utc) + timedelta(seconds=ttl_s))
    return {"name": cache.name, "expires_at": expires.isoformat()}


def delete_cache(client: GeminiClient, name: str) -> None:
    client.sdk.caches.delete(name=name)
