"""Building and sending one turn's requests to Gemini.

The turn planner and the reply runner speak the service's own parts and
choices; this module turns them into the SDK's request (tools, config,
contents), sends it (streamed or whole), counts tokens, draws pictures for
`generate_image`, and tells which failures are worth one more try.
"""
from __future__ import annotations

import logging
from typing import Iterator

from google.genai import errors as genai_errors
from google.genai import types

from .client import GeminiClient
from .convert import generation_config, to_contents
from .replies import ReplyBuilder

log = logging.getLogger("apsara.gemini")

BUILT_IN = {
    "google_search": lambda: types.Tool(google_search=types.GoogleSearch()),
    "url_context": lambda: types.Tool(url_context=types.UrlContext()),
    "code_execution": lambda: types.Tool(code_execution=types.ToolCodeExecution()),
}


def request_config(choice, declarations: list[dict], functions_allowed: bool = True) -> types.GenerateContentConfig:
    """The config of a turn's request: its model's settings, built-in tools and our functions."""
    tools = [BUILT_IN[t]() for t in choice.tools if t in BUILT_IN]
    extra = {}
    if declarations:
        tools.append(types.Tool(function_declarations=declarations))
        mode = "AUTO" if functions_allowed else "NONE"
        extra["tool_config"] = types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=mode),
            # Built-in tools next to our functions: Gemini refuses the mix without this.
            include_server_side_tool_invocations=True if len(tools) > 1 else None)
    if choice.model.makes_images:
        extra["response_modalities"] = ["TEXT", "IMAGE"]
    return generation_config(choice.model, choice.settings, choice.system_instruction, tools, **extra)


def uses_cache(config: types.GenerateContentConfig) -> bool:
    return bool(config.cached_content)


def send(client: GeminiClient, model_id: str, contents, config, builder: ReplyBuilder, stream: bool,
         bill=None) -> Iterator[tuple[str, dict]]:
    """One request, billed to the turn; yields the events of what Gemini answers (stored form).

    A stream cut before it sent anything is asked for once more.
    """
    for attempt in (1, 2):
        builder.begin_request()
        if not stream:
            yield from builder.feed(client.generate(model_id, contents, config, billed_to=bill))
            return
        sent = False
        for response in client.stream(model_id, contents, config, billed_to=bill):
            for event in builder.feed(response):
                sent = True
                yield event
        builder.end_stream()
        if not builder.cut or sent or attempt == 2:
            return
        log.warning("Gemini's stream ended before any output and without a finish reason; asking again")


def count_tokens(client: GeminiClient, model_id: str, contents: list[dict]) -> int:
    return client.sdk.models.count_tokens(model=model_id, contents=contents).total_tokens or 0


def with_function_results(contents: list, step_parts: list[dict], results: list[dict]) -> list:
    return contents + to_contents([("model", step_parts), ("user", results)])


def stale_reference(exc: BaseException) -> str | None:
    """"cache" or "file" when Gemini refused a request because a context cache or
    an uploaded file we referenced has expired (worth one retry), else None."""
    if not isinstance(exc, genai_errors.ClientError) or exc.code not in (400, 403, 404):
        return None
    message = (exc.message or "").lower()
    if "cachedcontent" in message:
        return "cache"
    if "file" in message:
        return "file"
    return None


def draw(client: GeminiClient, model_id: str, parts: list[dict], billed_to=None):
    """generate_image's call: a picture model answers the prompt (and the picture to change)."""
    return client.generate(model_id, [{"role": "user", "parts": parts}],
                           types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]),
                           billed_to=billed_to, purpose="image")
