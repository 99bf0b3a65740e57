"""What goes back to an OpenAI client: completions, stream chunks, usage and errors, in OpenAI's shapes.

Usage counts Gemini's thought tokens as completion tokens (they are billed as
output), and says how many of them there were in `completion_tokens_details`.
"""
from __future__ import annotations

import orjson

from ..errors import ApiError

# Gemini finish reasons -> OpenAI's; a reply that calls functions finishes with "tool_calls".
CONTENT_FILTER = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY",
                  "IMAGE_PROHIBITED_CONTENT", "LANGUAGE", "OTHER", "IMAGE_RECITATION"}


def finish_reason(gemini_reason: str | None, called_functions: bool) -> str:
    if called_functions:
        return "tool_calls"
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in CONTENT_FILTER:
        return "content_filter"
    return "stop"


def usage(gemini_usage: dict | None) -> dict:
    found = gemini_usage or {}
    prompt = found.get("prompt_tokens", 0)
    thoughts = found.get("thought_tokens", 0)
    completion = found.get("output_tokens", 0) + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": found.get("cached_tokens", 0)},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def tool_call(call_id: str, name: str, args: dict) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}


def completion(completion_id: str, created: int, model: str, text: str | None, tool_calls: list[dict],
               reason: str, gemini_usage: dict | None, routing: dict | None = None, thoughts: str = "") -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    if thoughts:
        # Gemini's thought summaries, in the field chat apps (Open WebUI, LibreChat) show as reasoning.
        message["reasoning_content"] = thoughts
    if tool_calls:
        message["tool_calls"] = tool_calls
    answer = {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
              "system_fingerprint": None,
              "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
              "usage": usage(gemini_usage)}
    if routing:
        answer["routing"] = routing  # how `auto` chose; clients that do not know the field ignore it
    return answer


def chunk(completion_id: str, created: int, model: str, delta: dict | None, reason: str | None = None,
          with_usage_field: bool = False) -> dict:
    """One stream chunk; with `delta=None`, the usage chunk's empty `choices`."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
    out = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
           "system_fingerprint": None, "choices": choices}
    if with_usage_field:
        out["usage"] = None  # OpenAI sends null on every chunk but the last when usage is asked for
    return out


def sse(data: dict | str) -> bytes:
    body = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + body + b"\n\n"


DONE = sse("[DONE]")

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
               413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error"}
ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


class OpenAIRequestError(ApiError):
    """A request OpenAI would refuse with 400, naming the parameter at fault (`messages[1].content`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(status, message)
        self.param = param
        self.openai_code = code


def http_status(error: ApiError) -> int:
    # OpenAI answers 400 where the rest of this API answers 422 (a request it understood but cannot serve).
    return 400 if error.code == 422 else error.code


def error_body(error: ApiError) -> dict:
    """Any service error in OpenAI's shape; the message is the service's own, never a key or a trace."""
    status = http_status(error)
    param = getattr(error, "param", None)
    code = getattr(error, "openai_code", None) or ERROR_CODES.get(status) or (
        None if status == 400 else error.status.lower())
    return {"error": {"message": error.message, "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
