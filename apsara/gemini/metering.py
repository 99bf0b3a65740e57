"""Every generate call to Gemini goes through here, and each is reported once.

`GeminiClient.generate()` and `GeminiClient.stream()` make the call and, when it
ends however it ends (complete, failed, stopped by its caller halfway), hand one
`CallRecord` to the client's `on_call` hook: the model, what the call was for,
who it is billed to, Gemini's last reported usage (what Gemini bills: a stream
reports a running total), the outcome and its timings. The SDK's own retries
happen inside one call; only the attempt that answered reports usage.
Token counting (countTokens) is free and not reported.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from google.genai import types

log = logging.getLogger("apsara.gemini")


@dataclass
class CallRecord:
    model: str
    purpose: str             # "reply", "judge", "image", "title"...
    billed_to: Any           # opaque here: the usage package's bill for the turn
    usage: dict | None       # Gemini's last reported usage; None if it never answered
    answered: bool           # Gemini sent at least one response
    outcome: str             # "ok", "error" or "stopped"
    duration_s: float
    first_token_s: float | None  # streams only: when the first content arrived


def usage_of(meta: types.GenerateContentResponseUsageMetadata) -> dict:
    """Gemini's usage in the API's field names; total is prompt + output + thoughts."""
    usage = {"prompt_tokens": meta.prompt_token_count or 0,
             "output_tokens": meta.candidates_token_count or 0,
             "thought_tokens": meta.thoughts_token_count or 0}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["output_tokens"] + usage["thought_tokens"]
    if meta.cached_content_token_count:
        usage["cached_tokens"] = meta.cached_content_token_count
    return usage


class _Call:
    def __init__(self, report: Callable[[CallRecord], None] | None, model: str, purpose: str, billed_to):
        self.report, self.model, self.purpose, self.billed_to = report, model, purpose, billed_to
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self.usage: dict | None = None
        self.answered = False
        self.outcome = "ok"

    def saw(self, response: types.GenerateContentResponse) -> None:
        self.answered = True
        if response.usage_metadata is not None:
            self.usage = usage_of(response.usage_metadata)
        if self.first_token_s is None and response.candidates:
            self.first_token_s = time.perf_counter() - self.started

    def finish(self) -> None:
        if self.report is None:
            return
        record = CallRecord(self.model, self.purpose, self.billed_to, self.usage, self.answered, self.outcome,
                            time.perf_counter() - self.started, self.first_token_s)
        try:
            self.report(record)
        except Exception:  # counting must never break a reply; the log says it was lost
            log.exception("a Gemini call could not be recorded in the usage ledger")


def generate(sdk, report, model: str, prepare, contents, config, *, billed_to=None, purpose: str = "reply"):
    """`prepare(contents, config)` gives what the SDK is handed: part of the call's time, as
    the SDK's own building of the request is."""
    call = _Call(report, model, purpose, billed_to)
    try:
        contents, config = prepare(contents, config)
        response = sdk.models.generate_content(model=model, contents=contents, config=config)
        call.saw(response)
        return response
    except BaseException:
        call.outcome = "error"
        raise
    finally:
        call.finish()


def stream(sdk, report, model: str, prepare, contents, config, *, billed_to=None,
           purpose: str = "reply") -> Iterator[types.GenerateContentResponse]:
    call = _Call(report, model, purpose, billed_to)
    responses = None
    try:
        contents, config = prepare(contents, config)
        responses = sdk.models.generate_content_stream(model=model, contents=contents, config=config)
        for response in responses:
            call.saw(response)
            yield response
    except GeneratorExit:
        call.outcome = "stopped"
        raise
    except BaseException:
        call.outcome = "error"
        raise
    finally:
        # A stopped stream closes its HTTP response now, not when it is collected.
        close = getattr(responses, "close", None)
        if close is not None:
            close()
        call.finish()
