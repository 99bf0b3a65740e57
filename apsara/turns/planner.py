"""Planning a turn, without holding the conversation's lock.

Everything a turn needs before it can be stored is decided here: the user
message's parts, the model (asking the `auto` router and its optional LLM judge),
the tools and settings, the size of the context (Gemini's countTokens near the
limit), and the request itself, with Files API uploads and the context cache.
Any of that may take seconds; none of it blocks another writer of the
conversation. The manager then commits the plan only if the tree has not moved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..attachments import Attachments
from ..clock import new_id, now_iso
from ..config import Settings
from ..conversations.manager import ConversationManager, Turn
from ..conversations.options import AUTO, check_thinking, check_tools, resolve_model
from ..conversations.output import check_output
from ..conversations.tree import MessageTree
from ..errors import ApiError
from ..filetypes import input_kind
from ..function_calls import FunctionCalls
from ..gemini.caching import ContextCache
from ..gemini.catalog import ModelCatalog, ModelInfo
from ..gemini.client import GeminiClient
from ..gemini.convert import ContentsMemo, to_contents
from .context import ContextMemo, KnownContext, context_path, sums_of
from ..gemini.errors import to_api_error
from ..gemini.requests import count_tokens, request_config
from .. import metrics
from ..routing.router import Router, translate_thinking
from ..usage import Bill, UsageService

JUDGE_OUTPUT_TOKENS = 5  # the judge answers one word (its max_output_tokens)
# The key suffix of the contents kept of what follows a conversation's context cache.
AFTER_CACHE = ("after cache",)


@dataclass
class Choice:
    """The model, tools and settings one turn runs with."""

    model: ModelInfo
    tools: list[str]
    settings: dict
    system_instruction: str
    routing: dict | None = None  # how `auto` chose the model, when it did


class Survey(NamedTuple):
    """What one walk over a context finds for every check of a turn."""

    tokens: int                            # estimate_tokens() of the context and system instruction
    files: tuple[tuple[int, dict], ...]    # its file parts: (message index, part)


class TurnPlanner:
    def __init__(self, manager: ConversationManager, catalog: ModelCatalog, gemini: GeminiClient,
                 attachments: Attachments, function_calls: FunctionCalls, settings: Settings, router: Router,
                 usage: UsageService):
        self.manager = manager
        self.usage = usage
        self.catalog = catalog
        self.gemini = gemini
        self.attachments = attachments
        self.function_calls = function_calls
        self.settings = settings
        self.cache = ContextCache(gemini, settings.cache_min_tokens)
        self.contexts = ContextMemo()  # a long conversation's turn walks only its new messages
        self.contents = ContentsMemo()  # and converts only those
        self.router = router

    def require_key(self) -> None:
        if not self.gemini.configured:
            raise ApiError(503, "no Gemini API key is configured: set the environment variable "
                                "'gemini' (or GEMINI_API_KEY) and restart")

    # -- a conversation turn ---------------------------------------------------------------
    def plan(self, owner: str, conversation_id: str, *, kind: str = "send", target_id: str | None = None,
             text: str | None = None, files: list[str] | None = None, model: str | None = None,
             tools: list[str] | None = None, settings: dict | None = None) -> Turn:
        """A turn ready to commit: validated, its messages made, its request built."""
        self.require_key()
        self.catalog.models()  # refresh the model list now, once
        file_parts = self.attachments.parts_for(owner, files) if files is not None else None
        document, tree, parent_id, target = self.manager.turn_basis(owner, conversation_id, kind, target_id)
        # Usage hook: this turn's Gemini calls go on this bill; the runner settles it.
        bill = self.usage.bill(owner, conversation_id)
        try:
            return self._plan(owner, conversation_id, kind, document, tree, parent_id, target, text, file_parts,
                              model, tools, settings, bill)
        except BaseException:
            bill.settle()
            raise

    def _plan(self, owner, conversation_id, kind, document, tree, parent_id, target, text, file_parts,
              model, tools, settings, bill: Bill) -> Turn:
        header = dict(document["conversation"])
        parts = None if kind == "regenerate" else self._user_parts(target, text, file_parts)
        known = self.contexts.context((owner, conversation_id), tree, parent_id)
        context = list(known.path)
        turn = Turn(header, None, None, context, None, conversation_id=conversation_id, kind=kind,
                    parent_id=parent_id, bill=bill, known_turns=known.turns)
        probe = {"id": new_id("m"), "role": "user", "parent_id": parent_id, "created_at": now_iso(),
                 "parts": parts} if parts is not None else None
        if probe is not None:
            context.append(probe)
        survey = self.survey_known(header["system_instruction"], known, probe)
        turn.choice = self.choose(owner, header, context, survey, model, tools, settings, bill)
        turn.files = survey.files
        self.manager.new_messages(turn, parts, turn.choice)
        if turn.stored_user is not None:
            context[-1] = turn.stored_user
        turn.context = context
        turn.request = self.request_for(owner, turn)
        return turn

    @staticmethod
    def _user_parts(previous: dict | None, text: str | None, file_parts: list[dict] | None) -> list[dict]:
        """The new message's parts; an edit keeps what it does not replace."""
        old = previous["parts"] if previous else []
        texts = [{"type": "text", "text": text}] if text is not None else [p for p in old if p["type"] == "text"]
        kept = file_parts if file_parts is not None else [p for p in old if p["type"] == "file"]
        if not any(p.get("text", "").strip() for p in texts) and not kept:
            raise ApiError(422, "the message would be empty: give text, files or both",
                           {"text": ["empty message"]})
        return texts + kept

    def choose(self, owner: str, header: dict, context: list[dict], survey: Survey,
               model_override: str | None, tools_override: list[str] | None, settings_override: dict | None,
               bill: Bill) -> Choice:
        """Model, tools and settings for a turn whose newest message ends `context`; refuses
        (422) what the model cannot take and a context over its input limit. `survey`: the
        survey() of the header's system instruction and `context`."""
        tools = tools_override if tools_override is not None else header["tools"]
        settings = dict(header["settings"])
        for key, value in (settings_override or {}).items():
            if value is None:
                settings.pop(key, None)  # null: the model's default, for this turn
            else:
                settings[key] = value
        routing = None
        input_tokens, files = survey
        if (model_override or header["model"]) == AUTO:
            # Budget hook: reserve for the dearest model `auto` may pick, before its judge is asked.
            bill.hold(self._auto_candidates(), input_tokens, settings.get("max_output_tokens"))
            routing = self.route_turn(context, tools, survey, bill)
            metrics.auto_decision(routing)
            model = resolve_model(self.catalog, routing.model or AUTO)
            tools = [t for t in tools if t in model.tools]
            settings = translate_thinking(settings, model)
        else:
            model = resolve_model(self.catalog, model_override or header["model"])
        check_tools(self.catalog, model, tools)
        check_thinking(model, settings)
        check_output(settings)
        self._check_inputs(model, files)
        # Budget hook: reserve this turn's worst case (or refuse with 429) before Gemini is called.
        bill.hold([model], input_tokens, settings.get("max_output_tokens"))
        choice = Choice(model, tools, settings, header["system_instruction"],
                        routing.to_dict() if routing else None)
        self._check_size(owner, choice, context, input_tokens, files)
        return choice

    def _auto_candidates(self) -> list[ModelInfo]:
        listed = {model_id for ids in self.router.tier_models.values() for model_id in ids}
        return [m for m in self.catalog.models() if m.id in listed] or self.catalog.models()

    def route_turn(self, context: list[dict], tools: list[str], survey: Survey, bill: Bill | None = None):
        """The `auto` decision for a turn whose newest message ends `context`; `survey`: the
        survey() of it and the system instruction."""
        newest = context[-1] if context else {"parts": []}
        text = "".join(p.get("text", "") for p in newest["parts"] if p["type"] == "text")
        file_types = [p["mime_type"] for _, p in survey.files]
        previous = next((m.get("routing", {}).get("tier") for m in reversed(context[:-1])
                         if m["role"] == "model" and m.get("routing")), None)
        return self.router.route(text, file_types=file_types, tools=tools, context_tokens=survey.tokens,
                                 previous_tier=previous, history_turns=len(context) // 2, billed_to=bill)

    def _check_inputs(self, model: ModelInfo, files: list[tuple[int, dict]]) -> None:
        for _, part in files:
            kind = input_kind(part["mime_type"])
            if kind != "text" and kind not in model.inputs:
                able = ", ".join(m.id for m in self.catalog.models() if kind in m.inputs) or "none"
                message_text = (f"model '{model.id}' cannot read {kind} files "
                                f"('{part['file_id']}'); models that can: {able}")
                raise ApiError(422, message_text, {"files": [message_text]})

    # -- context size ----------------------------------------------------------------------
    @staticmethod
    def estimate_tokens(system_instruction: str, context: list[dict]) -> int:
        """A generous guess (3 characters a token); only a guess near the limit costs a countTokens call."""
        return TurnPlanner.survey(system_instruction, context).tokens

    @staticmethod
    def survey(system_instruction: str, context: list[dict]) -> Survey:
        """One walk over a context for every check of a turn (1,000 messages on a long conversation)."""
        return TurnPlanner._survey(system_instruction, sums_of(context))

    @staticmethod
    def survey_known(system_instruction: str, known: KnownContext, newest: dict | None) -> Survey:
        """survey() of `known`'s path followed by `newest`, from what is known of the path."""
        return TurnPlanner._survey(system_instruction,
                                   sums_of([newest], len(known.path), known.sums) if newest else known.sums)

    @staticmethod
    def _survey(system_instruction: str, sums) -> Survey:
        return Survey((len(system_instruction or "") + sums.chars) // 3 + sums.tokens, sums.files)

    def count(self, owner: str, choice: Choice, context: list[dict]) -> int:
        """Gemini's own count of what this context would cost; failures as ApiError."""
        try:
            contents = to_contents(self.attachments.resolve(owner, context, self.survey("", context).files))
            if choice.system_instruction:
                contents = [{"role": "user", "parts": [{"text": choice.system_instruction}]}] + contents
            return count_tokens(self.gemini, choice.model.id, contents) if contents else 0
        except Exception as exc:
            raise to_api_error(exc, self.gemini.secret) from None

    def _check_size(self, owner: str, choice: Choice, context: list[dict], estimate: int,
                    files: list[tuple[int, dict]]) -> None:
        """`estimate` and `files`: the survey() of this context and system instruction."""
        limit = choice.model.input_token_limit
        has_media = any(not p["mime_type"].startswith(("image/", "text/")) for _, p in files)
        if not has_media and estimate <= limit // 2:
            return
        total = self.count(owner, choice, context)
        if total > limit:
            message = (f"the conversation is {total:,} tokens, over the input limit of '{choice.model.id}' "
                       f"({limit:,}) by {total - limit:,}; edit an earlier message, start a new conversation "
                       "or choose a model with a larger context")
            raise ApiError(422, message, {"text": [message]})

    def conversation_tokens(self, owner: str, conversation_id: str) -> dict:
        """What the next turn would send, counted by Gemini (files included); for `auto`,
        counted for the model it would pick for the newest message."""
        self.require_key()
        document = self.manager.load(owner, conversation_id)
        header = document["conversation"]
        tree = MessageTree.of(document)
        last = tree.last()
        context = context_path(tree, last["id"]) if last else []
        tools = header["tools"]
        if header["model"] == AUTO:
            survey = self.survey(header["system_instruction"], context)
            model = resolve_model(self.catalog, self.route_turn(context, tools, survey).model
                                  or self.manager.default_model())
        else:
            model = resolve_model(self.catalog, header["model"])
        choice = Choice(model, tools, header["settings"], header["system_instruction"])
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
                bill.hold([judge], self.estimate_tokens(system_instruction, context[-1:]), JUDGE_OUTPUT_TOKENS)
            return self.route_turn(context, tools or [], self.survey(system_instruction, context), bill).to_dict()
        finally:
            bill.settle()

    # -- one stateless turn ---------------------------------------------------------------
    def plan_stateless(self, owner: str, body: dict) -> Turn:
        """/generate: the same checks and call as a conversation turn, nothing stored."""
        self.require_key()
        parts = ([{"type": "text", "text": body["text"]}] if body.get("text") else [])
        parts += self.attachments.parts_for(owner, body.get("files") or [])
        header = {"model": body.get("model") or self.manager.default_model(), "tools": body.get("tools") or [],
                  "settings": {}, "system_instruction": body.get("system_instruction") or ""}
        stamp = now_iso()
        user = {"id": new_id("m"), "role": "user", "parent_id": None, "created_at": stamp, "parts": parts}
        bill = self.usage.bill(owner)  # usage hook, as in plan()
        try:
            survey = self.survey(header["system_instruction"], [user])
            choice = self.choose(owner, header, [user], survey, None, None, body.get("settings"), bill)
        except BaseException:
            bill.settle()
            raise
        turn = Turn(header, None, None, [user], choice, persist=False, bill=bill, files=survey.files)
        turn.stored_reply = {"id": new_id("m"), "role": "model", "parent_id": user["id"], "created_at": stamp,
                             "parts": [], "model": choice.model.id, "status": "streaming"}
        try:
            turn.request = self.request_for(owner, turn)
        except BaseException:
            bill.settle()
            raise
        return turn

    # -- the request -------------------------------------------------------------------------
    def request_for(self, owner: str, turn: Turn):
        """(contents, config) for this turn; through the conversation's context cache when it pays."""
        choice: Choice = turn.choice
        config = request_config(choice, self.function_calls.declarations(choice))
        turns = self.attachments.resolve(owner, turn.context, turn.files, turn.known_turns)
        if turn.persist and turn.conversation_id:
            def count(contents):
                return count_tokens(self.gemini, choice.model.id, contents)

            use, save = self.cache.plan(turn.header.get("_cache"), choice.model.id, config, turns, turn.context,
                                        turn.files, count)
            if save is not None:
                self.save_cache_record(owner, turn, save)
            key = (owner, turn.conversation_id)
            if use is not None:  # what follows the cached prefix: kept apart, as a list of its own
                self.contents.forget(key)  # the whole history's is not sent while the cache serves
                return ContextCache.apply(use, turns, config,
                                          lambda tail: self.contents.contents(key + AFTER_CACHE, tail))
            self.contents.forget(key + AFTER_CACHE)
            return self.contents.contents(key, turns), config
        return to_contents(turns), config

    def save_cache_record(self, owner: str, turn: Turn, record: dict | None) -> None:
        turn.header["_cache"] = record
        self.manager.set_cache_record(owner, turn.conversation_id, record)

    def delete_conversation(self, owner: str, conversation_id: str) -> None:
        record = self.manager.delete(owner, conversation_id)
        self.cache.forget(record)
        self.contexts.forget((owner, conversation_id))
        self.contents.forget((owner, conversation_id))
        self.contents.forget((owner, conversation_id) + AFTER_CACHE)
