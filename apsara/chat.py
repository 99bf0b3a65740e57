"""One turn of a conversation: store the user's message, call Gemini, store the reply.

`Chat.start(...)` validates the turn and stores the user message with an empty
reply marked `streaming` (nothing is stored when it refuses). `Chat.run(turn)`
then calls Gemini and yields the client events (`delta`, `thought`, `part`,
`grounding`, then `done` or `error`); it stores the reply whatever happens: a
failure as `error`, an abandoned run as `interrupted` with what had arrived.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterator

from google.genai import errors as genai_errors
from google.genai import types

from . import metrics
from .attachments import Attachments
from .caching import ContextCache
from .config import Settings
from .clock import new_id, now_iso
from .conversations.manager import ConversationManager, Turn, context_path, message_view
from .conversations.options import AUTO, check_thinking, check_tools, resolve_model
from .conversations.output import check_output
from .conversations.tree import MessageTree
from .errors import ApiError
from .files import FileStore
from .filetypes import input_kind
from .function_calls import FunctionCalls
from .gemini.catalog import ModelCatalog, ModelInfo
from .gemini.client import GeminiClient
from .gemini.convert import generation_config, to_contents
from .gemini.errors import to_api_error
from .gemini.replies import ReplyBuilder
from .routing.router import Router, translate_thinking
from .usage import Bill, UsageService

log = logging.getLogger("apsara.chat")

BUILT_IN = {
    "google_search": lambda: types.Tool(google_search=types.GoogleSearch()),
    "url_context": lambda: types.Tool(url_context=types.UrlContext()),
    "code_execution": lambda: types.Tool(code_execution=types.ToolCodeExecution()),
}


_UNPARSED = object()
JUDGE_OUTPUT_TOKENS = 5  # the judge answers one word (its max_output_tokens)


def _parse_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return _UNPARSED


@dataclass
class Choice:
    """The model, tools and settings one turn runs with."""

    model: ModelInfo
    tools: list[str]
    settings: dict
    system_instruction: str
    routing: dict | None = None  # how `auto` chose the model, when it did


class Chat:
    def __init__(self, manager: ConversationManager, catalog: ModelCatalog, gemini: GeminiClient,
                 files: FileStore, settings: Settings, router: Router, usage: UsageService):
        self.manager = manager
        self.usage = usage
        self.catalog = catalog
        self.gemini = gemini
        self.files = files
        self.settings = settings
        self.cache = ContextCache(gemini, settings.cache_min_tokens)
        self.attachments = Attachments(files, gemini)
        self.function_calls = FunctionCalls(self.attachments, catalog, gemini, settings.image_model)
        self.router = router

    # -- starting a turn ----------------------------------------------------------
    def _require_key(self) -> None:
        if not self.gemini.configured:
            raise ApiError(503, "no Gemini API key is configured: set the environment variable "
                                "'gemini' (or GEMINI_API_KEY) and restart")

    def _chooser(self, owner: str, model_override: str | None, tools_override: list[str] | None,
                 settings_override: dict | None, bill: Bill):
        def choose(header: dict, context: list[dict]) -> Choice:
            tools = tools_override if tools_override is not None else header["tools"]
            settings = dict(header["settings"])
            for key, value in (settings_override or {}).items():
                if value is None:
                    settings.pop(key, None)  # null: the model's default, for this turn
                else:
                    settings[key] = value
            routing = None
            input_tokens = self._estimate_tokens(header["system_instruction"], context)
            if (model_override or header["model"]) == AUTO:
                # Budget hook: reserve for the dearest model `auto` may pick, before its judge is asked.
                bill.hold(self._auto_candidates(), input_tokens, settings.get("max_output_tokens"))
                routing = self.route_turn(context, tools, header["system_instruction"], bill)
                metrics.auto_decision(routing)
                model = resolve_model(self.catalog, routing.model or AUTO)
                tools = [t for t in tools if t in model.tools]
                settings = translate_thinking(settings, model)
            else:
                model = resolve_model(self.catalog, model_override or header["model"])
            check_tools(self.catalog, model, tools)
            check_thinking(model, settings)
            check_output(settings)
            self._check_inputs(model, context)
            # Budget hook: reserve this turn's worst case (or refuse with 429) before Gemini is called.
            bill.hold([model], input_tokens, settings.get("max_output_tokens"))
            choice = Choice(model, tools, settings, header["system_instruction"],
                            routing.to_dict() if routing else None)
            self._check_size(owner, choice, context)
            return choice
        return choose

    def _auto_candidates(self) -> list[ModelInfo]:
        listed = {model_id for ids in self.router.tier_models.values() for model_id in ids}
        return [m for m in self.catalog.models() if m.id in listed] or self.catalog.models()

    def route_turn(self, context: list[dict], tools: list[str], system_instruction: str = "",
                   bill: Bill | None = None):
        """The `auto` decision for a turn whose newest message ends `context`."""
        newest = context[-1] if context else {"parts": []}
        text = "".join(p.get("text", "") for p in newest["parts"] if p["type"] == "text")
        file_types = [p["mime_type"] for m in context for p in m["parts"] if p["type"] == "file"]
        previous = next((m.get("routing", {}).get("tier") for m in reversed(context[:-1])
                         if m["role"] == "model" and m.get("routing")), None)
        tokens = self._estimate_tokens(system_instruction, context)
        return self.router.route(text, file_types=file_types, tools=tools, context_tokens=tokens,
                                 previous_tier=previous, history_turns=len(context) // 2, billed_to=bill)

    def _check_inputs(self, model: ModelInfo, context: list[dict]) -> None:
        for message in context:
            for part in message["parts"]:
                if part["type"] != "file":
                    continue
                kind = input_kind(part["mime_type"])
                if kind != "text" and kind not in model.inputs:
                    able = ", ".join(m.id for m in self.catalog.models() if kind in m.inputs) or "none"
                    message_text = (f"model '{model.id}' cannot read {kind} files "
                                    f"('{part['file_id']}'); models that can: {able}")
                    raise ApiError(422, message_text, {"files": [message_text]})

    def start(self, owner: str, conversation_id: str, *, kind: str = "send", target_id: str | None = None,
              text: str | None = None, files: list[str] | None = None, model: str | None = None,
              tools: list[str] | None = None, settings: dict | None = None) -> Turn:
        self._require_key()
        self.catalog.models()  # refresh the model list now, not while the conversation is locked
        file_parts = self.attachments.parts_for(owner, files) if files is not None else None

        def user_parts(previous: dict | None) -> list[dict]:
            """The new message's parts; an edit keeps what it does not replace."""
            old = previous["parts"] if previous else []
            texts = [{"type": "text", "text": text}] if text is not None else [p for p in old if p["type"] == "text"]
            kept = file_parts if file_parts is not None else [p for p in old if p["type"] == "file"]
            if not any(p.get("text", "").strip() for p in texts) and not kept:
                raise ApiError(422, "the message would be empty: give text, files or both",
                               {"text": ["empty message"]})
            return texts + kept

        # Usage hook: this turn's Gemini calls go on this bill; `run` settles it.
        bill = self.usage.bill(owner, conversation_id)
        try:
            turn = self.manager.begin_turn(owner, conversation_id, kind=kind, target_id=target_id,
                                           user_parts=user_parts,
                                           choose=self._chooser(owner, model, tools, settings, bill))
        except BaseException:
            bill.settle()
            raise
        turn.bill = bill
        return turn

    # -- context size ----------------------------------------------------------------------
    @staticmethod
    def _estimate_tokens(system_instruction: str, context: list[dict]) -> int:
        """A generous guess (3 characters a token); only a guess near the limit costs a countTokens call."""
        chars = len(system_instruction or "")
        tokens = 0
        for message in context:
            for part in message["parts"]:
                chars += len(part.get("text", "")) + len(str(part.get("args") or part.get("response") or ""))
                if part["type"] == "file":
                    tokens += 1000  # a picture is ~258-1,100 tokens; long media are counted exactly below
        return chars // 3 + tokens

    def _count_contents(self, model_id: str, contents: list[dict]) -> int:
        return self.gemini.sdk.models.count_tokens(model=model_id, contents=contents).total_tokens or 0

    def count(self, owner: str, choice: Choice, context: list[dict]) -> int:
        """Gemini's own count of what this context would cost; failures as ApiError."""
        try:
            contents = to_contents(self.attachments.resolve(owner, context))
            if choice.system_instruction:
                contents = [{"role": "user", "parts": [{"text": choice.system_instruction}]}] + contents
            return self._count_contents(choice.model.id, contents) if contents else 0
        except Exception as exc:
            raise to_api_error(exc, self.gemini.secret) from None

    def _check_size(self, owner: str, choice: Choice, context: list[dict]) -> None:
        limit = choice.model.input_token_limit
        has_media = any(p["type"] == "file" and not p["mime_type"].startswith(("image/", "text/"))
                        for m in context for p in m["parts"])
        if not has_media and self._estimate_tokens(choice.system_instruction, context) <= limit // 2:
            return
        total = self.count(owner, choice, context)
        if total > limit:
            message = (f"the conversation is {total:,} tokens, over the input limit of '{choice.model.id}' "
                       f"({limit:,}) by {total - limit:,}; edit an earlier message, start a new conversation "
                       "or choose a model with a larger context")
            raise ApiError(422, message, {"text": [message]})

    def conversation_tokens(self, owner: str, conversation_id: str) -> dict:
        """What the next turn would send, counted by Gemini (files included)."""
        self._require_key()
        document = self.manager.load(owner, conversation_id)
        header = document["conversation"]
        tree = MessageTree.of(document)
        last = tree.last()
        context = context_path(tree, last["id"]) if last else []
        model = resolve_model(self.catalog, header["model"])
        choice = Choice(model, header["tools"], header["settings"], header["system_instruction"])
        total = self.count(owner, choice, context)
        return {"model": model.id, "total_tokens": total, "input_token_limit": model.input_token_limit}

    def preview_route(self, owner: str, body: dict) -> dict:
        """POST /route: the decision `auto` would make, generating nothing."""
        parts = [{"type": "text", "text": body["text"]}] + self.attachments.parts_for(owner, body.get("files") or [])
        context: list[dict] = []
        tools = body.get("tools")
        system_instruction = ""
        if body.get("conversation_id"):
            document = self.manager.load(owner, body["conversation_id"])
            header = document["conversation"]
            tree = MessageTree.of(document)
            last = tree.last()
            context = context_path(tree, last["id"]) if last else []
            tools = tools if tools is not None else header["tools"]
            system_instruction = header["system_instruction"]
        context = context + [{"id": "preview", "role": "user", "parent_id": None, "parts": parts}]
        # The judge, when there is one, is a Gemini call: billed and held against the budget too.
        bill = self.usage.bill(owner, body.get("conversation_id"))
        judge = self.catalog.get(self.settings.auto_judge_model) if self.router.judge else None
        try:
            if judge is not None:
                bill.hold([judge], self._estimate_tokens(system_instruction, context[-1:]), JUDGE_OUTPUT_TOKENS)
            return self.route_turn(context, tools or [], system_instruction, bill).to_dict()
        finally:
            bill.settle()

    # -- one stateless turn ---------------------------------------------------------------
    def start_stateless(self, owner: str, body: dict) -> Turn:
        """/generate: the same checks and call as a conversation turn, nothing stored."""
        self._require_key()
        parts = ([{"type": "text", "text": body["text"]}] if body.get("text") else [])
        parts += self.attachments.parts_for(owner, body.get("files") or [])
        header = {"model": body.get("model") or self.manager.default_model(), "tools": body.get("tools") or [],
                  "settings": {}, "system_instruction": body.get("system_instruction") or ""}
        stamp = now_iso()
        user = {"id": new_id("m"), "role": "user", "parent_id": None, "created_at": stamp, "parts": parts}
        bill = self.usage.bill(owner)  # usage hook, as in start()
        try:
            choice = self._chooser(owner, None, None, body.get("settings"), bill)(header, [user])
        except BaseException:
            bill.settle()
            raise
        reply = {"id": new_id("m"), "role": "model", "parent_id": user["id"], "created_at": stamp, "parts": [],
                 "model": choice.model.id, "status": "streaming"}
        turn = Turn(header, None, reply, [user], choice)
        turn.persist = False
        turn.bill = bill
        return turn

    # -- running it ---------------------------------------------------------------
    def request_for(self, owner: str, turn: Turn, conversation_id: str | None = None):
        """(contents, config) for this turn; through the conversation's context cache when it pays."""
        choice: Choice = turn.choice
        config = self._config(choice)
        turns = self.attachments.resolve(owner, turn.context)
        if turn.persist and conversation_id:
            def count(contents):
                return self._count_contents(choice.model.id, contents)

            use, save = self.cache.plan(turn.header.get("_cache"), choice.model.id, config, turns, turn.context, count)
            if save is not None:
                self._save_cache_record(owner, conversation_id, turn, save)
            if use is not None:
                return ContextCache.apply(use, turns, config)
        return to_contents(turns), config

    def _save_cache_record(self, owner: str, conversation_id: str, turn: Turn, record: dict | None) -> None:
        turn.header["_cache"] = record
        self.manager.set_cache_record(owner, conversation_id, record)

    def delete_conversation(self, owner: str, conversation_id: str) -> None:
        record = self.manager.delete(owner, conversation_id)
        self.cache.forget(record)

    def _config(self, choice: Choice, functions_allowed: bool = True) -> types.GenerateContentConfig:
        tools = [BUILT_IN[t]() for t in choice.tools if t in BUILT_IN]
        functions = self.function_calls.declarations(choice)
        extra = {}
        if functions:
            tools.append(types.Tool(function_declarations=functions))
            mode = "AUTO" if functions_allowed else "NONE"
            extra["tool_config"] = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=mode),
                # Built-in tools next to our functions: Gemini refuses the mix without this.
                include_server_side_tool_invocations=True if len(tools) > 1 else None)
        if choice.model.makes_images:
            extra["response_modalities"] = ["TEXT", "IMAGE"]
        return generation_config(choice.model, choice.settings, choice.system_instruction, tools, **extra)

    def _stream_step(self, bill, model_id, contents, config, builder, stream, link):
        """One request to Gemini, billed to the turn; yields the client events of what it answers.

        A stream cut before it sent the client anything is asked for once more.
        """
        for attempt in (1, 2):
            builder.begin_request()
            if not stream:
                builder.feed(self.gemini.generate(model_id, contents, config, billed_to=bill))
                return
            first_part, sent = len(builder.parts), False
            for response in self.gemini.stream(model_id, contents, config, billed_to=bill):
                for name, data in builder.feed(response):
                    if data.get("type") == "file" and link:
                        data = {**data, "url": link(data["file_id"])}
                    sent = True
                    yield name, data
            builder.end_stream()
            if not builder.cut or sent or attempt == 2:
                return
            log.warning("Gemini's stream ended before any output and without a finish reason; asking again")
            del builder.parts[first_part:]

    def _call(self, owner: str, conversation_id: str | None, turn: Turn, builder: ReplyBuilder, stream: bool):
        """Call Gemini, run the functions it asks for (a bounded number of rounds),
        yield client events. Retried once, before any output, if an upload had expired."""
        link = self.manager.link(owner)
        choice = turn.choice
        for attempt in (1, 2):
            contents, config = self.request_for(owner, turn, conversation_id)
            try:
                for step in range(self.settings.max_function_steps + 1):
                    first_new = len(builder.parts)
                    yield from self._stream_step(turn.bill, choice.model.id, contents, config, builder, stream, link)
                    step_parts = builder.parts[first_new:]
                    calls = [p for p in step_parts if p["type"] == "function_call"]
                    if not calls or builder.cut:
                        return
                    last_round = step == self.settings.max_function_steps - 1
                    results, pictures = [], []
                    for call in calls:
                        result, made = self.function_calls.run(owner, turn, call, builder, last_round)
                        results.append(result)
                        pictures += made
                    # Stored and shown in this order: the calls, their results, then any pictures.
                    for part in results + pictures:
                        builder.parts.append(part)
                        shown = {k: v for k, v in part.items() if k != "thought_signature"}
                        if part["type"] == "file" and link:
                            shown["url"] = link(part["file_id"])
                        yield "part", shown
                    contents = contents + to_contents([("model", step_parts), ("user", results)])
                    # The model must answer now, without calling anything (a cached
                    # request keeps its tool config: the note in the results says so).
                    if last_round and not config.cached_content:
                        config = self._config(choice, functions_allowed=False)
                return
            except genai_errors.ClientError as exc:
                # Gemini forgets uploads after 48 hours and caches when they expire:
                # upload or cache again and retry, once, if nothing was shown yet.
                message = (exc.message or "").lower()
                if attempt == 2 or builder.parts or exc.code not in (400, 403, 404):
                    raise
                if "cachedcontent" in message and turn.header.get("_cache"):
                    self._save_cache_record(owner, conversation_id, turn, None)
                elif not ("file" in message and self.attachments.forget_uploads(owner, turn.context)):
                    raise

    def run(self, owner: str, conversation_id: str, turn: Turn, stream: bool) -> Iterator[tuple[str, dict]]:
        try:
            yield from self._run(owner, conversation_id, turn, stream)
        finally:
            turn.bill.settle()  # budget hook: the turn's calls are in the ledger; free the rest

    def _run(self, owner: str, conversation_id: str, turn: Turn, stream: bool) -> Iterator[tuple[str, dict]]:
        builder = ReplyBuilder(on_inline=self.attachments.image_saver(owner))
        outcome: tuple[dict, ApiError | None] | None = None
        try:
            yield from self._call(owner, conversation_id, turn, builder, stream)
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
        elif turn.choice.settings.get("response_mime_type") == "application/json":
            parsed = _parse_json("".join(p.get("text", "") for p in fields["parts"] if p["type"] == "text"))
            if parsed is not _UNPARSED:
                fields = {**fields, "parsed": parsed}
        if not turn.persist:
            return message_view({**turn.reply, **fields}, link=self.manager.link(owner))
        return self.manager.finish_reply(owner, conversation_id, turn.reply["id"], fields)
