"""One turn of a conversation: store the user's message, call Gemini, store the reply.

`Chat.start(...)` validates the turn and stores the user message with an empty
reply marked `streaming` (nothing is stored when it refuses). `Chat.run(turn)`
then calls Gemini and yields the client events (`delta`, `thought`, `part`,
`grounding`, then `done` or `error`); it stores the reply whatever happens: a
failure as `error`, an abandoned run as `interrupted` with what had arrived.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

from google.genai import types

from .conversations.manager import ConversationManager, Turn
from .conversations.options import check_thinking, check_tools, resolve_model
from .errors import ApiError
from .gemini.catalog import ModelCatalog, ModelInfo
from .gemini.client import GeminiClient
from .gemini.convert import generation_config, to_contents
from .gemini.errors import to_api_error
from .gemini.replies import ReplyBuilder

log = logging.getLogger("apsara.chat")

BUILT_IN = {
    "google_search": lambda: types.Tool(google_search=types.GoogleSearch()),
    "url_context": lambda: types.Tool(url_context=types.UrlContext()),
    "code_execution": lambda: types.Tool(code_execution=types.ToolCodeExecution()),
}


@dataclass
class Choice:
    """The model, tools and settings one turn runs with."""

    model: ModelInfo
    tools: list[str]
    settings: dict
    system_instruction: str


class Chat:
    def __init__(self, manager: ConversationManager, catalog: ModelCatalog, gemini: GeminiClient):
        self.manager = manager
        self.catalog = catalog
        self.gemini = gemini

    # -- starting a turn ----------------------------------------------------------
    def _require_key(self) -> None:
        if not self.gemini.configured:
            raise ApiError(503, "no Gemini API key is configured: set the environment variable "
                                "'gemini' (or GEMINI_API_KEY) and restart")

    def _chooser(self, model_override: str | None, tools_override: list[str] | None):
        def choose(header: dict) -> Choice:
            model = resolve_model(self.catalog, model_override or header["model"])
            tools = tools_override if tools_override is not None else header["tools"]
            check_tools(self.catalog, model, tools)
            check_thinking(model, header["settings"])
            return Choice(model, tools, header["settings"], header["system_instruction"])
        return choose

    def start(self, owner: str, conversation_id: str, *, kind: str = "send", target_id: str | None = None,
              text: str | None = None, files: list[str] | None = None, model: str | None = None,
              tools: list[str] | None = None) -> Turn:
        self._require_key()
        file_parts = self._file_parts(owner, files) if files is not None else None

        def user_parts(previous: dict | None) -> list[dict]:
            """The new message's parts; an edit keeps what it does not replace."""
            old = previous["parts"] if previous else []
            texts = [{"type": "text", "text": text}] if text is not None else [p for p in old if p["type"] == "text"]
            kept = file_parts if file_parts is not None else [p for p in old if p["type"] == "file"]
            return texts + kept

        return self.manager.begin_turn(owner, conversation_id, kind=kind, target_id=target_id,
                                       user_parts=user_parts, choose=self._chooser(model, tools))

    def _file_parts(self, owner: str, file_ids: list[str]) -> list[dict]:
        if file_ids:
            raise ApiError(404, f"file '{file_ids[0]}' not found")
        return []

    # -- running it ---------------------------------------------------------------
    def request_for(self, turn: Turn) -> tuple[list[dict], types.GenerateContentConfig]:
        choice: Choice = turn.choice
        contents = to_contents([(m["role"], m["parts"]) for m in turn.context])
        tools = [BUILT_IN[t]() for t in choice.tools if t in BUILT_IN]
        config = generation_config(choice.model, choice.settings, choice.system_instruction, tools)
        return contents, config

    def run(self, owner: str, conversation_id: str, turn: Turn, stream: bool) -> Iterator[tuple[str, dict]]:
        builder = ReplyBuilder()
        outcome: tuple[dict, ApiError | None] | None = None
        try:
            contents, config = self.request_for(turn)
            sdk = self.gemini.sdk
            model_id = turn.choice.model.id
            if stream:
                for response in sdk.models.generate_content_stream(model=model_id, contents=contents, config=config):
                    yield from builder.feed(response)
            else:
                builder.feed(sdk.models.generate_content(model=model_id, contents=contents, config=config))
            outcome = builder.outcome()
        except GeneratorExit:
            outcome = ({**self._partial(builder), "status": "interrupted"}, None)
            self._store(owner, conversation_id, turn, outcome)
            raise
        except Exception as exc:  # every failure is stored on the reply and told to the client
            error = to_api_error(exc, self.gemini.secret)
            if error.code >= 500 and not isinstance(exc, ApiError):
                log.warning("Gemini call failed: %s (%s)", error.message, type(exc).__name__)
            outcome = ({**self._partial(builder), "status": "error"}, error)
        stored = self._store(owner, conversation_id, turn, outcome)
        fields, error = outcome
        turn.error = error
        if error is None:
            yield "done", stored
        else:
            yield "error", {"error": error.to_dict()["error"], "reply": stored}

    @staticmethod
    def _partial(builder: ReplyBuilder) -> dict:
        return {"parts": builder.parts, "finish_reason": builder.finish_reason, "usage": builder.usage,
                "grounding": builder.grounding}

    def _store(self, owner, conversation_id, turn: Turn, outcome) -> dict:
        fields, error = outcome
        if error is not None:
            fields = {**fields, "error": {"code": error.code, "status": error.status, "message": error.message}}
        return self.manager.finish_reply(owner, conversation_id, turn.reply["id"], fields)
