"""Automatic conversation titles: a cheap model names the conversation from its first turn.

Asked once, in the background, with a short timeout and no retries; the answer
is cleaned to one short line. Any failure gives None: a title is a nicety and
never fails or delays a turn.
"""
from __future__ import annotations

import re

from google.genai import types

from .client import GeminiClient
from .replies import usage_of

INSTRUCTION = ("Write a short title for this conversation, at most six words, in the language of the user's "
               "message. Answer with the title only: no quotes, no final period.")
MAX_TITLE_CHARS = 80
_QUOTES = "\"'“”‘’«»`*#"


def clean_title(answer: str) -> str:
    """The first line of the answer, without quotes, markdown or a 'Title:' label, kept short."""
    line = next((line for line in answer.splitlines() if line.strip()), "")
    line = re.sub(r"^\s*title\s*:\s*", "", line, flags=re.IGNORECASE).strip().strip(_QUOTES).strip()
    line = " ".join(line.split()).rstrip(".")
    if len(line) > MAX_TITLE_CHARS:
        line = line[:MAX_TITLE_CHARS].rsplit(" ", 1)[0] + "…"
    return line


def write_title(client: GeminiClient, model_id: str, user_text: str, reply_text: str,
                timeout_s: float, billed_to=None) -> tuple[str | None, dict | None]:
    """(the title or None, the call's usage or None). The call is metered like any other
    (purpose "title", on `billed_to`)."""
    prompt = f"User:\n{user_text[:2000]}"
    if reply_text:
        prompt += f"\n\nAssistant:\n{reply_text[:2000]}"
    try:
        response = client.generate(
            model_id, prompt, billed_to=billed_to, purpose="title",
            config=types.GenerateContentConfig(
                # Room for a thinking model's minimal thoughts as well as the few words of the title.
                system_instruction=INSTRUCTION, temperature=0.2, max_output_tokens=256,
                http_options=types.HttpOptions(timeout=int(timeout_s * 1000),
                                               retry_options=types.HttpRetryOptions(attempts=1))))
    except Exception:  # a title is a nicety: never let it fail anything
        return None, None
    usage = usage_of(response.usage_metadata) if response.usage_metadata else None
    title = clean_title(response.text or "")
    return (title or None), usage
