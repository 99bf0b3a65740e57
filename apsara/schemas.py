"""Every request and response schema of the API, in one place.

Request schemas refuse unknown fields (marshmallow's default RAISE) and wrong
types: numbers must be JSON numbers, booleans JSON booleans — a string "0.7"
is not a temperature. Length limits come from the app's settings at load time.
Response schemas document the API (the OpenAPI document is built from them).
"""
from __future__ import annotations

import re

import orjson
from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .conversations.output import MIME_TYPES, SAFETY_CATEGORIES, SAFETY_THRESHOLDS

ID_REGEX = r"^[A-Za-z0-9_-]{1,64}$"
# Stored in the conversation's header line, which every listing reads: kept small.
MAX_RESPONSE_SCHEMA_BYTES = 32 * 1024
MAX_RESPONSE_SCHEMA_DEPTH = 32
THINKING_LEVELS = ["minimal", "low", "medium", "high"]


# -- strict fields ---------------------------------------------------------------
class StrictFloat(fields.Float):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class QueryBoolean(fields.Boolean):
    """A query-string flag: exactly `true` or `false`, nothing looser ("1", "yes", "")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value not in ("true", "false"):
            raise ValidationError("Must be true or false.")
        return value == "true"


# An event id is a count of a stream's events: 18 digits is far past any stream, and keeps
# the id within 64 bits. ASCII digits only: int() would take "1_000" and other scripts' digits.
EVENT_ID = re.compile(r"[0-9]{1,18}")


class QueryEventId(fields.Integer):
    """An event id in a query string, as strict as the `Last-Event-ID` header."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
            raise ValidationError("Not an event id (a whole number, at most 18 digits).")
        return int(value)


class MaxChars(validate.Validator):
    """A length limit read from the app's settings, so it stays configurable."""

    def __init__(self, setting: str):
        self.setting = setting

    def __call__(self, value):
        limit = getattr(current_app.extensions["apsara"].settings, self.setting)
        if len(value) > limit:
            raise ValidationError(f"Longer than maximum length {limit}.")
        return value


class MaxItems(MaxChars):
    def __call__(self, value):
        limit = getattr(current_app.extensions["apsara"].settings, self.setting)
        if len(value) > limit:
            raise ValidationError(f"More than {limit} items.")
        return value


def _whole_id(value: str) -> None:
    # fullmatch: `$` alone also matches before a trailing newline ("nl-1\n").
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValidationError("Must be 1 to 64 letters, digits, _ or -.")


def _id_field(**kwargs):
    metadata = {"pattern": ID_REGEX, **kwargs.pop("metadata", {})}
    return fields.String(validate=_whole_id, metadata=metadata, **kwargs)


def _json_depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _bounded_schema(value) -> None:
    if value is None:
        return
    if _json_depth(value) > MAX_RESPONSE_SCHEMA_DEPTH:
        raise ValidationError(f"Nested deeper than {MAX_RESPONSE_SCHEMA_DEPTH} levels.")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:  # an integer beyond 64 bits: it could not be stored either
        raise ValidationError(f"Cannot be stored: {exc}.") from None
    if size > MAX_RESPONSE_SCHEMA_BYTES:
        raise ValidationError(f"Larger than {MAX_RESPONSE_SCHEMA_BYTES} bytes as JSON.")


# -- requests --------------------------------------------------------------------
class SafetySettingSchema(Schema):
    category = fields.String(required=True, validate=validate.OneOf(SAFETY_CATEGORIES))
    threshold = fields.String(required=True, validate=validate.OneOf(SAFETY_THRESHOLDS))


class SettingsSchema(Schema):
    """Generation settings. Each key is optional; null means "the model's default"."""

    temperature = StrictFloat(allow_none=True, validate=validate.Range(0, 2))
    top_p = StrictFloat(allow_none=True, validate=validate.Range(0, 1))
    top_k = StrictInteger(allow_none=True, validate=validate.Range(1, 1000))
    max_output_tokens = StrictInteger(allow_none=True, validate=validate.Range(1, 1_000_000))
    stop_sequences = fields.List(fields.String(validate=validate.Length(1, 200)), allow_none=True,
                                 validate=validate.Length(max=5))
    seed = StrictInteger(allow_none=True, validate=validate.Range(-(2**31), 2**31 - 1))
    thinking_level = fields.String(allow_none=True, validate=validate.OneOf(THINKING_LEVELS))
    thinking_budget = StrictInteger(allow_none=True, validate=validate.Range(-1, 32768))
    include_thoughts = StrictBoolean(allow_none=True)
    response_mime_type = fields.String(allow_none=True, validate=validate.OneOf(MIME_TYPES))
    response_schema = fields.Dict(allow_none=True, validate=_bounded_schema, metadata={
        "description": "Gemini's schema (OpenAPI subset) for structured output; needs a JSON or enum mime type. "
                       f"At most {MAX_RESPONSE_SCHEMA_DEPTH} levels deep and {MAX_RESPONSE_SCHEMA_BYTES} bytes."})
    safety_settings = fields.List(fields.Nested(SafetySettingSchema), allow_none=True,
                                  validate=validate.Length(max=len(SAFETY_CATEGORIES)))


def _known_tools(value):
    from .gemini.tools import TOOL_DESCRIPTIONS

    if len(value) > 20:
        raise ValidationError("More than 20 tools.")
    unknown = [t for t in value if t not in TOOL_DESCRIPTIONS]
    if unknown:
        raise ValidationError(f"Unknown tool '{unknown[0]}'; tools: {', '.join(TOOL_DESCRIPTIONS)}.")


def tool_list(**kwargs):
    from .gemini.tools import TOOL_DESCRIPTIONS

    return fields.List(fields.String(validate=validate.Length(1, 64), metadata={"enum": list(TOOL_DESCRIPTIONS)}),
                       validate=_known_tools, **kwargs)


class ConversationCreateSchema(Schema):
    id = _id_field(metadata={"description": "The session id; made up by the server when absent."})
    title = fields.String(validate=MaxChars("max_title_chars"))
    model = fields.String(validate=validate.Length(1, 200))
    system_instruction = fields.String(validate=MaxChars("max_system_instruction_chars"))
    tools = tool_list()
    settings = fields.Nested(SettingsSchema)
    temporary = StrictBoolean(metadata={
        "description": "Left out of listing and search unless asked, and deleted APSARA_TEMPORARY_TTL_H hours "
                       "after its last message. Set at creation only."})


class ConversationPatchSchema(ConversationCreateSchema):
    class Meta:
        exclude = ("id", "temporary")

    archived = StrictBoolean(metadata={"description": "Left out of the listing unless `?archived=true`."})
    pinned = StrictBoolean(metadata={"description": "Listed alone with `?pinned=true`."})

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Nothing to change: give at least one field.", "_body")


class TurnOptionsSchema(Schema):
    model = fields.String(validate=validate.Length(1, 200),
                          metadata={"description": "Another model for this turn only."})
    settings = fields.Nested(SettingsSchema, metadata={
        "description": "Settings for this turn only, merged over the conversation's."})
    tools = tool_list(metadata={"description": "Other tools for this turn only."})
    stream = StrictBoolean(metadata={"description": "Stream server-sent events; when absent, "
                                                    "`Accept: text/event-stream` asks for a stream."})


class SendSchema(TurnOptionsSchema):
    text = fields.String(validate=MaxChars("max_message_chars"))
    files = fields.List(fields.String(validate=validate.Length(1, 64), metadata={"pattern": ID_REGEX}),
                        validate=MaxItems("max_files_per_message"))

    @validates_schema
    def has_content(self, data, **kwargs):
        if not (data.get("text") or "").strip() and not data.get("files"):
            raise ValidationError("Give text, files or both.", "text")


class EditSchema(TurnOptionsSchema):
    text = fields.String(validate=MaxChars("max_message_chars"),
                         metadata={"description": "The new text; omitted keeps the old text."})
    files = fields.List(fields.String(validate=validate.Length(1, 64), metadata={"pattern": ID_REGEX}),
                        validate=MaxItems("max_files_per_message"),
                        metadata={"description": "Omitted keeps the old files; [] drops them."})

    @validates_schema
    def not_empty(self, data, **kwargs):
        # The body is required: an edit with nothing in it is a mistake, not a resend.
        if not data:
            raise ValidationError("Give at least one field: text, files, model, tools, settings or stream.",
                                  "_body")


class RegenerateSchema(TurnOptionsSchema):
    pass


class GenerateSchema(TurnOptionsSchema):
    """One stateless turn: nothing is stored."""

    text = fields.String(validate=MaxChars("max_message_chars"))
    files = fields.List(fields.String(validate=validate.Length(1, 64), metadata={"pattern": ID_REGEX}),
                        validate=MaxItems("max_files_per_message"))
    system_instruction = fields.String(validate=MaxChars("max_system_instruction_chars"))

    @validates_schema
    def has_content(self, data, **kwargs):
        if not (data.get("text") or "").strip() and not data.get("files"):
            raise ValidationError("Give text, files or both.", "text")


class RouteSchema(Schema):
    text = fields.String(required=True, validate=MaxChars("max_message_chars"))
    files = fields.List(fields.String(validate=validate.Length(1, 64), metadata={"pattern": ID_REGEX}),
                        validate=MaxItems("max_files_per_message"))
    tools = tool_list()
    conversation_id = _id_field(metadata={"description": "Route as the next turn of this conversation."})


class RoutingSchema(Schema):
    model = fields.String()
    tier = fields.String(validate=validate.OneOf(["lite", "flash", "pro", "image"]))
    reason = fields.String()
    classifier = fields.String()
    latency_ms = fields.Float()


class EventsQuerySchema(Schema):
    after = QueryEventId(metadata={
        "description": "Replay the events after this id (a `Last-Event-ID` header wins over it)."})


class ListQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String(validate=validate.Length(1, 500))
    q = fields.String(validate=validate.Length(1, 500), metadata={
        "description": "Words that must all occur (whole words, any case) in the title or in one message of "
                       "any version; each hit carries a `snippet`."})
    archived = QueryBoolean(load_default=False, metadata={"description": "`true`: only archived conversations."})
    pinned = QueryBoolean(load_default=False, metadata={"description": "`true`: only pinned conversations."})
    temporary = QueryBoolean(load_default=False, metadata={"description": "`true`: only temporary conversations."})


class ExportQuerySchema(Schema):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "markdown"]))
    files = fields.String(validate=validate.OneOf(["inline"]), metadata={
        "description": "`inline`: each referenced file's bytes, base64, in the JSON export."})


class ImportUploadSchema(Schema):
    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary", "description":
                                               "An Apsara export, a ChatGPT conversations.json or an Open "
                                               "WebUI export."})


class ForkSchema(Schema):
    message_id = _id_field(required=True, metadata={
        "description": "The last message the new conversation holds (with its ancestors)."})
    id = _id_field(metadata={"description": "The new conversation's id; made up by the server when absent."})
    title = fields.String(validate=MaxChars("max_title_chars"))
    temporary = StrictBoolean(load_default=False)


# -- responses -------------------------------------------------------------------
class ErrorBodySchema(Schema):
    code = fields.Integer(metadata={"description": "The HTTP status."})
    status = fields.String(metadata={"description": "INVALID_ARGUMENT (400), UNAUTHENTICATED (401), NOT_FOUND "
                                                    "(404), ..., UNPROCESSABLE (422), RESOURCE_EXHAUSTED (429)..."})
    message = fields.String(metadata={"description": "What went wrong, in words; never a trace, path or key."})
    details = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), metadata={
        "description": "On a 422: each dotted field path (`settings.temperature`, `settings.response_schema."
                       "properties.age.type`) mapped to its messages, the first 50 (`_more` when there were "
                       "others). On a 429: `retry_after`, the seconds to wait (as the Retry-After header). "
                       "Else empty."})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema)


# A change to a conversation that could not be made now; nothing of it was stored.
STORE_UNAVAILABLE = ("The conversation stayed locked by another change, the database is away, or the disk did "
                     "not keep the change: nothing was stored; try again after Retry-After.")


class PartSchema(Schema):
    type = fields.String(validate=validate.OneOf(
        ["text", "thought", "file", "code", "code_result", "function_call", "function_response"]))
    text = fields.String()
    file_id = fields.String()
    mime_type = fields.String()
    url = fields.String()
    language = fields.String()
    code = fields.String()
    outcome = fields.String()
    output = fields.String()
    name = fields.String()
    args = fields.Dict()
    response = fields.Dict()


class UsageSchema(Schema):
    prompt_tokens = fields.Integer()
    output_tokens = fields.Integer()
    thought_tokens = fields.Integer()
    total_tokens = fields.Integer()
    cached_tokens = fields.Integer()


class GroundingSchema(Schema):
    queries = fields.List(fields.String())
    sources = fields.List(fields.Dict())


class MessageSchema(Schema):
    id = fields.String()
    role = fields.String(validate=validate.OneOf(["user", "model"]))
    parent_id = fields.String(allow_none=True)
    created_at = fields.String()
    parts = fields.List(fields.Nested(PartSchema))
    text = fields.String()
    siblings = fields.List(fields.String())
    model = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(
        ["complete", "streaming", "stopped", "interrupted", "error", "blocked"]))
    last_event_id = fields.Integer(allow_none=True, metadata={
        "description": "Replies: the id of the last event the stored text and parts include; a client that "
                       "shows a streaming reply follows it from there (events endpoint, `Last-Event-ID`)."})
    finish_reason = fields.String(allow_none=True)
    usage = fields.Nested(UsageSchema, allow_none=True)
    grounding = fields.Nested(GroundingSchema, allow_none=True)
    error = fields.Nested(ErrorBodySchema, allow_none=True)
    routing = fields.Dict(allow_none=True, metadata={"description": "How the `auto` model chose (auto turns only)."})
    parsed = fields.Raw(allow_none=True, metadata={"description": "The JSON reply, parsed (JSON output only)."})
    safety_ratings = fields.List(fields.Dict(), allow_none=True)


class ConversationSummarySchema(Schema):
    id = fields.String()
    title = fields.String()
    created_at = fields.String()
    updated_at = fields.String()
    model = fields.String()
    system_instruction = fields.String()
    tools = fields.List(fields.String())
    settings = fields.Nested(SettingsSchema)
    message_count = fields.Integer(metadata={"description": (
        "Messages on the active path (what `messages` holds), not every stored version: editing the "
        "first message of a 6-message conversation makes it 2.")})
    title_source = fields.String(allow_none=True, validate=validate.OneOf(["user", "auto"]), metadata={
        "description": "null until a title exists; `user` once a user gave one, `auto` for one the server wrote."})
    archived = fields.Boolean()
    pinned = fields.Boolean()
    temporary = fields.Boolean()
    snippet = fields.String(metadata={"description": "Search hits only: plain text (at most 300 characters) "
                                                     "holding the first match."})


class ConversationSchema(ConversationSummarySchema):
    messages = fields.List(fields.Nested(MessageSchema))


class UploadSchema(Schema):
    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


class FileSchema(Schema):
    id = fields.String()
    filename = fields.String()
    mime_type = fields.String()
    size_bytes = fields.Integer()
    sha256 = fields.String()
    created_at = fields.String()
    generated = fields.Boolean(metadata={"description": "Made by a model, not uploaded."})
    url = fields.String(metadata={"description": "Signed, expiring URL of the bytes: a path on this server, "
                                                 "or an absolute URL when the server sets APSARA_PUBLIC_URL."})


class TokenCountSchema(Schema):
    model = fields.String()
    total_tokens = fields.Integer()
    input_token_limit = fields.Integer()


class GenerateResultSchema(Schema):
    reply = fields.Nested(MessageSchema)


class ReplyResultSchema(Schema):
    reply = fields.Nested(MessageSchema)


class TurnResultSchema(Schema):
    user_message = fields.Nested(MessageSchema)
    reply = fields.Nested(MessageSchema)


class ConversationListSchema(Schema):
    conversations = fields.List(fields.Nested(ConversationSummarySchema))
    next_cursor = fields.String(allow_none=True)


class SkippedSchema(Schema):
    messages = fields.Integer(metadata={"description": "Nodes not shown to a user (hidden system messages, tool "
                                                      "traffic, empty or unfinished nodes)."})
    conversations = fields.Integer(metadata={"description": "Entries with nothing a user saw."})


class ImportResultSchema(Schema):
    conversations = fields.List(fields.Nested(ConversationSummarySchema))
    skipped = fields.Nested(SkippedSchema)


class ExportFileSchema(FileSchema):
    class Meta:
        exclude = ("generated", "url")  # an export carries the file itself, not a link to it

    data = fields.String(metadata={"description": "The bytes, base64 (`files=inline` only)."})


class ConversationExportSchema(Schema):
    format = fields.String(metadata={"description": "`apsara.conversation`"})
    version = fields.Integer()
    exported_at = fields.String()
    conversation = fields.Nested(ConversationSummarySchema)
    messages = fields.List(fields.Nested(MessageSchema), metadata={
        "description": "Every version of every message, parents first."})
    active = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "For each parent id (\"\" for the root) its active child."})
    files = fields.List(fields.Nested(ExportFileSchema))


class HealthSchema(Schema):
    status = fields.String(validate=validate.OneOf(["ok", "degraded"]),
                           metadata={"description": "`degraded` (503): this server cannot serve a chat now."})
    version = fields.String()
    gemini = fields.String(validate=validate.OneOf(["gemini", "vertex", "fake", "missing"]), metadata={
        "description": "Which upstream answers: the Gemini API, Vertex AI, `make run`'s offline fake, "
                       "or `missing` (no key configured)."})
    storage = fields.String(validate=validate.OneOf(["ok", "unwritable"]))
    default_model = fields.String(metadata={"description": "The default model in use."})
    default_model_note = fields.String(metadata={
        "description": "Present when APSARA_DEFAULT_MODEL is not offered and another model stands in."})


class LivenessSchema(Schema):
    status = fields.String(validate=validate.OneOf(["ok"]))


class ModelSchema(Schema):
    id = fields.String()
    display_name = fields.String()
    description = fields.String()
    input_token_limit = fields.Integer()
    output_token_limit = fields.Integer()
    inputs = fields.List(fields.String())
    outputs = fields.List(fields.String())
    tools = fields.List(fields.String())
    thinking = fields.Dict(allow_none=True)
    status = fields.String()


class ModelListSchema(Schema):
    default = fields.String()
    source = fields.String(metadata={"description": "live (from the Gemini API) or bundled"})
    default_note = fields.String(metadata={
        "description": "Present when APSARA_DEFAULT_MODEL is not offered and `default` stands in for it."})
    models = fields.List(fields.Nested(ModelSchema))


class ToolSchema(Schema):
    id = fields.String()
    description = fields.String()


class ToolListSchema(Schema):
    tools = fields.List(fields.Nested(ToolSchema))


# -- usage -----------------------------------------------------------------------
class UsageQuerySchema(Schema):
    from_ = fields.Date(data_key="from", format="%Y-%m-%d")
    to = fields.Date(format="%Y-%m-%d")
    group_by = fields.String(validate=validate.OneOf(["day", "model", "conversation", "user"]))
    user = fields.String(validate=validate.Regexp(r"^(\*|[A-Za-z0-9_-]{1,64})$"),
                         metadata={"description": "Admin keys only: a user's name, or * for everyone."})

    @validates_schema
    def _ordered(self, data, **kwargs):
        if data.get("from_") and data.get("to") and data["from_"] > data["to"]:
            raise ValidationError("'from' is after 'to'.", "from")


class UsageTotalsSchema(Schema):
    calls = fields.Integer()
    prompt_tokens = fields.Integer()
    output_tokens = fields.Integer()
    thought_tokens = fields.Integer()
    cached_tokens = fields.Integer()
    total_tokens = fields.Integer()
    cost_usd = fields.Float(metadata={"description": "Estimated from the price table (APSARA_PRICES)."})


class UsageGroupSchema(UsageTotalsSchema):
    key = fields.String(allow_none=True, metadata={
        "description": "The day, model, conversation id (null: calls outside a conversation) or user."})
    user = fields.String(metadata={"description": "With user=* and group_by=conversation: whose conversation."})


class UsageReportSchema(Schema):
    from_ = fields.String(data_key="from")
    to = fields.String()
    user = fields.String()
    totals = fields.Nested(UsageTotalsSchema)
    groups = fields.List(fields.Nested(UsageGroupSchema))


# -- server-sent events (documented here; OpenAPI 3.0 has no schema for a stream) ---------------
STREAM_EVENTS = {
    "user_message": ("Message", "the stored user message (send and edit only)"),
    "reply_start": (None, '`{"id", "model", "routing"?}`: the reply being written'),
    "delta": (None, '`{"text"}`: more of the reply\'s text'),
    "thought": (None, '`{"text"}`: a thought summary (with settings.include_thoughts)'),
    "part": ("Part", "a non-text part: code, code_result, file, function_call, function_response"),
    "grounding": ("Grounding", '`{"queries", "sources"}`: what the answer is grounded in'),
    "title": (None, '`{"title"}`: the automatic title of a new conversation, when it is ready while the '
                    "stream is open (send only; else read it from the conversation)"),
    "done": ("Message", "the stored reply (complete, stopped or blocked); the stream ends"),
    "error": (None, '`{"error": {code, status, message, details}, "reply": the partial reply as stored}` '
                    "(status error or interrupted); the stream ends"),
}


def stream_content(with_user: bool = True) -> dict:
    """The `text/event-stream` content of a streamed turn, its events described."""
    events = {name: doc for name, doc in STREAM_EVENTS.items()
              if with_user or name not in ("user_message", "title")}
    lines = "\n".join(f"- `{name}`: {text}" for name, (_, text) in events.items())
    description = ("Server-sent events, each `event: <name>`, `id: <1, 2, 3...>` and one line of JSON "
                   "`data:`; `: ping` comments while nothing else goes out. Events, in order:\n" + lines)
    return {"text/event-stream": {
        "schema": {"type": "string", "description": description},
        "example": 'event: reply_start\nid: 1\ndata: {"id": "m1", "model": "gemini-3.8-flash"}\n\n'
                   'event: delta\nid: 2\ndata: {"text": "Hello"}\n\n',
        "x-events": {name: ({"$ref": f"#/components/schemas/{ref}"} if ref else {"type": "object"})
                     for name, (ref, _) in events.items()},
    }}


def stream_response(with_user: bool = True) -> dict:
    return {"200": {"description": "The turn as server-sent events (`stream: true`, or "
                                   "`Accept: text/event-stream` with no `stream`).",
                    "content": stream_content(with_user)}}


# -- links: which answer feeds which request (for clients, and for stateful testing) ------------
def _operation(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


_CONVERSATION = "/api/v1/conversations/{conversation_id}"
_MESSAGE = _CONVERSATION + "/messages/{message_id}"


def _links(spec: dict[str, tuple[str, str, dict]]) -> dict:
    return {name: {"operationRef": _operation(path, method), "parameters": parameters}
            for name, (path, method, parameters) in spec.items()}


CONVERSATION_LINKS = {201: {"links": _links({
    "GetConversation": (_CONVERSATION, "get", {"conversation_id": "$response.body#/id"}),
    "ChangeConversation": (_CONVERSATION, "patch", {"conversation_id": "$response.body#/id"}),
    "DeleteConversation": (_CONVERSATION, "delete", {"conversation_id": "$response.body#/id"}),
    "CountTokens": (_CONVERSATION + "/tokens", "get", {"conversation_id": "$response.body#/id"}),
    "SendMessage": (_CONVERSATION + "/messages", "post", {"conversation_id": "$response.body#/id"}),
})}}

TURN_LINKS = {201: {"links": _links({
    "EditUserMessage": (_MESSAGE, "put", {"conversation_id": "$request.path.conversation_id",
                                         "message_id": "$response.body#/user_message/id"}),
    "RegenerateReply": (_MESSAGE + "/regenerate", "post", {"conversation_id": "$request.path.conversation_id",
                                                          "message_id": "$response.body#/reply/id"}),
    "SelectVersion": (_MESSAGE + "/select", "post", {"conversation_id": "$request.path.conversation_id",
                                                    "message_id": "$response.body#/user_message/id"}),
})}}

FILE_LINKS = {201: {"links": _links({
    "GetFile": ("/api/v1/files/{file_id}", "get", {"file_id": "$response.body#/id"}),
    "GetFileContent": ("/api/v1/files/{file_id}/content", "get", {"file_id": "$response.body#/id"}),
})}}
