"""An optional LLM judge for the `auto` router: a cheap model names the tier.

Asked with enum-structured output and a strict timeout, without retries; any
failure (timeout, error, an answer outside the enum) returns None and the
local classifier decides instead.
"""
from __future__ import annotations

from google.genai import types

from .client import GeminiClient

TIERS = ["lite", "flash", "pro", "image"]
INSTRUCTION = (
    "You route chat messages to a model tier. Answer with one word.\n"
    "lite: greetings, thanks, one-fact answers, small rewrites or translations of a sentence.\n"
    "flash: everyday explanations, writing, ordinary code, summaries.\n"
    "pro: proofs, hard math, multi-step reasoning, system design, intricate debugging.\n"
    "image: the user wants a picture made or changed."
)


def judge_tier(client: GeminiClient, model_id: str, text: str, previous_tier: str | None,
               timeout_s: float, billed_to=None) -> str | None:
    prompt = (f"Previous turn's tier: {previous_tier}.\n" if previous_tier else "") + f"Message:\n{text[:4000]}"
    try:
        response = client.generate(
            model_id, prompt, billed_to=billed_to, purpose="judge",
            config=types.GenerateContentConfig(
                system_instruction=INSTRUCTION, temperature=0.0, max_output_tokens=5,
                response_mime_type="text/x.enum", response_schema={"type": "STRING", "enum": TIERS},
                http_options=types.HttpOptions(timeout=int(timeout_s * 1000),
                                               retry_options=types.HttpRetryOptions(attempts=1))))
        answer = (response.text or "").strip().lower()
    except Exception:  # the judge is an extra opinion: never let it fail a turn
        return None
    return answer if answer in TIERS else None
