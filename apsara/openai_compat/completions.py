"""One stateless Chat Completions turn: choose the model, call Gemini, answer in OpenAI's shapes.

The model is the one asked for, or for `auto` the one the router picks, as for
every other turn of the service. Streams wait for Gemini's first chunk before
answering, so a refusal (bad request, rate limit, Gemini down) is still an HTTP
status the client can act on; after that, failures arrive as an error chunk.
Budgets are held in `prepare` (429 before Gemini is called) and settled in
`_settled`; the Gemini calls go through the metered client, so the usage
ledger, metrics and the request's log line see them.
"""
from __future__ import annotations

import base64
import itertools
import queue
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from .. import metrics
from ..conversations.options import AUTO
from ..errors import ApiError
from ..filetypes import input_kind
from ..gemini.catalog import ModelCatalog, ModelInfo
from ..gemini.client import GeminiClient
from ..gemini.convert import generation_config, to_contents
from ..gemini.errors import to_api_error
from ..gemini.replies import ReplyBuilder
from ..gemini.tools import SERVER_FUNCTIONS
from ..routing.router import Router, Routing, translate_thinking
from ..usage import Bill, UsageService
from . import answers
from .answers import OpenAIRequestError
from .request import CompletionRequest
from .signatures import to_param, tool_call_id

PING = b": ping\n\n"


def can_call_functions(model: ModelInfo) -> bool:
    # Our server functions are Gemini function calls: a model offered them can call the client's too.
    return any(name in model.tools for name in SERVER_FUNCTIONS)


def picture_as_markdown(part: dict) -> dict:
    """A picture an image model made -> a Markdown image, which OpenAI chat apps show inline.

    Its thought signature rides in the data URL (`;signature=`, which browsers ignore), and
    `request` turns the picture back into inline data when the client sends the reply back.
    """
    data = base64.b64encode(part["data"]).decode()
    signature = f";signature={to_param(part['thought_signature'])}" if part.get("thought_signature") else ""
    return {"type": "text", "text": f"\n\n![image](data:{part['mime_type']}{signature};base64,{data})\n\n"}


@dataclass
class Turn:
    """A request ready for Gemini: the model chosen, the contents and config built."""

    request: CompletionRequest
    model: ModelInfo
    contents: list[dict]
    config: object
    bill: Bill  # what the turn's Gemini calls are billed to; settled when it ends
    routing: dict | None = None
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))


class Completions:
    def __init__(self, catalog: ModelCatalog, gemini: GeminiClient, router: Router, usage: UsageService,
                 ping_interval_s: float):
        self.catalog = catalog
        self.gemini = gemini
        self.router = router
        self.usage = usage
        self.ping_interval_s = ping_interval_s

    # -- choosing the model and building the request ---------------------------------
    def prepare(self, owner: str, request: CompletionRequest) -> Turn:
        """The turn ready for Gemini, its worst case held against the user's budget (or 429)."""
        if not self.gemini.configured:
            raise ApiError(503, "no Gemini API key is configured: set the environment variable "
                                "'gemini' (or GEMINI_API_KEY) and restart")
        bill = self.usage.bill(owner)  # every Gemini call of the turn, the judge's too, goes on it
        try:
            return self._prepare(request, bill)
        except BaseException:
            bill.settle()
            raise

    def _prepare(self, request: CompletionRequest, bill: Bill) -> Turn:
        input_tokens = request.estimated_tokens()
        max_output = request.settings.get("max_output_tokens")
        routing = None
        if request.model == AUTO:
            # Budget hook: reserve for the dearest model `auto` may pick, before its judge is asked.
            bill.hold(self._auto_candidates(), input_tokens, max_output)
            routing = self._route(request, input_tokens, bill)
            metrics.auto_decision(routing)
            model = self.catalog.get(routing.model)
        else:
            model = self.catalog.get(request.model)
            if model is None:
                raise OpenAIRequestError(f"The model '{request.model}' does not exist; GET /v1/models lists "
                                         "the models", "model", "model_not_found", status=404)
        self._check_model(model, request)
        # reasoning_effort becomes whatever thinking setting this model takes (or none).
        settings = translate_thinking(request.settings, model)
        extra = {}
        if request.functions:
            extra["tool_config"] = {"function_calling_config": {
                "mode": request.function_mode, "allowed_function_names": request.allowed_functions}}
        if request.json_schema is not None:
            extra["response_json_schema"] = request.json_schema
        if model.makes_images:
            extra["response_modalities"] = ["TEXT", "IMAGE"]
        tools = [{"function_declarations": request.functions}] if request.functions else None
        try:
            config = generation_config(model, settings, request.system_instruction, tools, **extra)
        except ValueError as exc:  # the SDK's own validation of what the client sent
            raise OpenAIRequestError(f"Gemini cannot take this request: {str(exc).splitlines()[0]}") from None
        # Budget hook: reserve this turn's worst case (or refuse with 429) before Gemini is called.
        bill.hold([model], input_tokens, max_output)
        return Turn(request, model, to_contents(request.turns), config, bill,
                    routing.to_dict() if routing else None)

    def _auto_candidates(self) -> list[ModelInfo]:
        listed = {model_id for ids in self.router.tier_models.values() for model_id in ids}
        return [m for m in self.catalog.models() if m.id in listed] or self.catalog.models()

    def _route(self, request: CompletionRequest, input_tokens: int, bill: Bill) -> Routing:
        caller = self.catalog.get(request.results_for) if request.results_for else None
        if caller is not None:
            # Results of function calls go back to the model that made them: only it can read
            # the signatures, and the answer should come from the model that asked.
            tier = next((name for name, ids in self.router.tier_models.items() if caller.id in ids), "flash")
            return Routing(caller.id, tier, f"{tier}: the results of {caller.id}'s function calls go back to it",
                           "function-call continuation", 0.0)
        routing = self.router.route(
            request.last_user_text(), file_types=request.file_types(),
            # A model that can run server functions can call the client's functions too.
            tools=[next(iter(SERVER_FUNCTIONS))] if request.functions else [], context_tokens=input_tokens,
            history_turns=sum(1 for role, _ in request.turns if role == "user") - 1, billed_to=bill)
        if not routing.model:
            raise ApiError(503, f"no available model can take this request ({routing.reason})")
        chosen = self.catalog.get(routing.model)
        if request.functions and chosen is not None and not can_call_functions(chosen):
            # A picture request that also offers functions: image models cannot call them, and
            # the client's functions cannot be left out as the service's own tools are.
            fallback = next((m for m in map(self.catalog.get, self.router.tier_models["flash"])
                             if m is not None and can_call_functions(m)), None)
            if fallback is not None:
                routing = replace(routing, model=fallback.id, tier="flash",
                                  reason=routing.reason + "; image models cannot call the request's functions")
        return routing

    def _check_model(self, model: ModelInfo, request: CompletionRequest) -> None:
        if request.functions and not can_call_functions(model):
            able = ", ".join(m.id for m in self.catalog.models() if can_call_functions(m))
            raise OpenAIRequestError(f"model '{model.id}' cannot call functions; models that can: {able}", "tools")
        for mime in request.file_types():
            kind = input_kind(mime)
            if kind != "text" and kind not in model.inputs:
                able = ", ".join(m.id for m in self.catalog.models() if kind in m.inputs)
                raise OpenAIRequestError(f"model '{model.id}' cannot read {kind}; models that can: {able}",
                                         "messages")

    # -- running it ---------------------------------------------------------------------
    @contextmanager
    def _settled(self, turn: Turn):
        """The one place a turn of this surface ends: whether it finished, failed or its client
        went away, what it spent is in the ledger by now and the rest of its reservation is freed."""
        try:
            yield
        finally:
            turn.bill.settle()

    def _answer_of(self, turn: Turn, builder: ReplyBuilder) -> tuple[str | None, list[dict], str]:
        """(text, tool calls, finish reason) of a finished reply; raises if Gemini gave nothing usable."""
        fields, error = builder.outcome()
        if error is not None and builder.finish_reason != "MAX_TOKENS":
            raise error
        text = "".join(p["text"] for p in fields["parts"] if p["type"] == "text")
        calls = [self._tool_call(turn, p) for p in fields["parts"] if p["type"] == "function_call"]
        reason = answers.finish_reason(fields["finish_reason"], bool(calls))
        return (text or (None if calls or fields["status"] == "blocked" else "")), calls, reason

    @staticmethod
    def _tool_call(turn: Turn, part: dict) -> dict:
        call_id = tool_call_id(part.get("thought_signature"), part.get("call_id"), turn.model.id)
        return answers.tool_call(call_id, part["name"], part["args"])

    def complete(self, turn: Turn) -> dict:
        """A non-streamed turn -> the chat.completion object."""
        with self._settled(turn):
            builder = ReplyBuilder(on_inline=picture_as_markdown)
            try:
                builder.feed(self.gemini.generate(turn.model.id, turn.contents, turn.config, billed_to=turn.bill))
            except Exception as exc:
                raise to_api_error(exc, self.gemini.secret) from None
            text, calls, reason = self._answer_of(turn, builder)
            thoughts = "".join(p["text"] for p in builder.parts if p["type"] == "thought")
            return answers.completion(turn.id, turn.created, turn.model.id, text, calls, reason, builder.usage,
                                      turn.routing, thoughts)

    def stream(self, turn: Turn) -> Iterator[bytes]:
        """A streamed turn -> SSE bytes. Gemini's refusal raises here, before any byte is sent."""
        events = self._stream(turn)
        first = next(events)

        def all_events():
            yield first
            yield from events  # closing this (client gone) closes the turn, and with it the Gemini stream

        return all_events()

    def _chunk(self, turn: Turn, delta: dict | None, reason: str | None = None) -> bytes:
        return answers.sse(answers.chunk(turn.id, turn.created, turn.model.id, delta, reason,
                                         with_usage_field=turn.request.include_usage))

    def _stream(self, turn: Turn) -> Iterator[bytes]:
        with self._settled(turn):
            responses = self._gemini_stream(turn)
            try:
                yield from self._relay(turn, responses)
            finally:
                responses.close()

    def _relay(self, turn: Turn, responses: Iterator) -> Iterator[bytes]:
        # No byte goes out before Gemini's first chunk, so no ping either.
        first = next((item for item in responses if item is not None), None)
        if isinstance(first, BaseException):  # nothing was sent yet: an HTTP error
            raise to_api_error(first, self.gemini.secret)
        opening = answers.chunk(turn.id, turn.created, turn.model.id, {"role": "assistant", "content": ""},
                                with_usage_field=turn.request.include_usage)
        if turn.routing:
            opening["routing"] = turn.routing  # how `auto` chose; clients ignore fields they do not know
        yield answers.sse(opening)
        builder = ReplyBuilder(on_inline=picture_as_markdown)
        calls = 0
        try:
            for response in itertools.chain([first] if first is not None else [], responses):
                if response is None:
                    yield PING
                    continue
                if isinstance(response, BaseException):
                    raise to_api_error(response, self.gemini.secret)
                seen = len(builder.parts)
                for name, data in builder.feed(response):
                    if name == "delta":
                        yield self._chunk(turn, {"content": data["text"]})
                    elif name == "thought":
                        yield self._chunk(turn, {"reasoning_content": data["text"]})
                # Calls are never merged into earlier parts: the new ones are at the end.
                for part in builder.parts[seen:]:
                    if part["type"] == "function_call":
                        yield self._chunk(turn, {"tool_calls": [{"index": calls, **self._tool_call(turn, part)}]})
                        calls += 1
            _, _, reason = self._answer_of(turn, builder)
        except ApiError as error:  # after the first byte, a failure can only be told in the stream
            yield answers.sse(answers.error_body(error))
            return
        yield self._chunk(turn, {}, reason)
        if turn.request.include_usage:
            yield answers.sse({**answers.chunk(turn.id, turn.created, turn.model.id, None),
                               "usage": answers.usage(builder.usage)})
        yield answers.DONE

    def _gemini_stream(self, turn: Turn) -> Iterator:
        """Gemini's stream read by a thread of its own: yields responses, None when it is time for
        a ping, and the exception that ended it, if one did. Once this is closed (the client left),
        the reader closes the Gemini request at its next chunk."""
        channel: queue.Queue = queue.Queue()
        leave = threading.Event()
        end = object()

        def read():
            chunks = None
            try:
                chunks = self.gemini.stream(turn.model.id, turn.contents, turn.config, billed_to=turn.bill)
                for response in chunks:
                    channel.put(response)
                    if leave.is_set():
                        break
            except Exception as exc:  # handed to the reader, which tells the client
                channel.put(exc)
            finally:
                if chunks is not None:
                    chunks.close()
                channel.put(end)

        threading.Thread(target=read, name="apsara-openai-stream", daemon=True).start()
        try:
            while True:
                try:
                    item = channel.get(timeout=self.ping_interval_s)
                except queue.Empty:
                    yield None
                    continue
                if item is end:
                    return
                yield item
        finally:
            leave.set()
