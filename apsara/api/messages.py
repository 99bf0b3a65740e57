"""Messages: send, edit a user message, regenerate a reply, select a version; a reply's
events (re-attach to a stream) and stopping a reply.

Each turn answers 201 with JSON, or 200 with server-sent events when asked to
stream. The user message (and an empty reply) are stored before the first byte
goes out; the reply then runs as a job that no request owns.
"""
from __future__ import annotations

from flask import current_app, jsonify, request
from flask_smorest import Blueprint

from ..auth import current_user
from ..errors import ApiError
from ..schemas import (EVENT_ID, STORE_UNAVAILABLE, TURN_LINKS, ConversationSchema, EditSchema, ErrorSchema,
                       EventsQuerySchema, RegenerateSchema, ReplyResultSchema, SendSchema, TurnResultSchema,
                       stream_content, stream_response)
from ..streaming import sse_response
from ..turns.follow import from_job

blp = Blueprint("messages", __name__, url_prefix="/api/v1/conversations",
                description="Messages, replies and their versions.")

STREAM_DOC = {**stream_response(with_user=True), **TURN_LINKS}
UNAVAILABLE_DOC = "No Gemini key configured, or Gemini unavailable. " + STORE_UNAVAILABLE
REGENERATE_STREAM_DOC = stream_response(with_user=False)


def wants_stream(body: dict) -> bool:
    if "stream" in body:
        return body["stream"]
    return "text/event-stream" in (request.headers.get("Accept") or "")


def answer(conversation_id: str | None, turn, body: dict, with_user: bool, success: int = 201):
    services = current_app.extensions["apsara"]
    owner = current_user()
    stream = wants_stream(body)
    job = services.chat.launch(owner, turn, stream=stream)
    if stream:
        def events():
            if with_user:
                yield 1, "user_message", turn.user_message
            yield from from_job(job, 0, services.manager.link(owner), services.settings.ping_interval_s)
        return sse_response(events())
    name, data = job.wait()
    result = {"user_message": turn.user_message} if with_user else {}
    if name == "done":
        response = jsonify({**result, "reply": data})
        response.status_code = success
        return response
    response = jsonify({"error": data["error"], **result, "reply": data["reply"]})
    response.status_code = data["error"]["code"]
    for header, value in (turn.error.headers if turn.error else {}).items():
        response.headers[header] = value
    return response


def _chat():
    return current_app.extensions["apsara"].chat


@blp.route("/<conversation_id>/messages", methods=["POST"])
@blp.arguments(SendSchema())
@blp.response(201, TurnResultSchema)
@blp.doc(responses=STREAM_DOC)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or file.")
@blp.alt_response(409, schema=ErrorSchema, description="A reply is still being written in this conversation, "
                                                       "or the conversation changed while this turn was prepared.")
@blp.alt_response(503, schema=ErrorSchema, description=UNAVAILABLE_DOC)
def send(body, conversation_id):
    """Send a message and get the reply (JSON or a stream)."""
    turn = _chat().start(current_user(), conversation_id, kind="send", text=body.get("text"),
                         files=body.get("files"), model=body.get("model"), tools=body.get("tools"),
                         settings=body.get("settings"))
    return answer(conversation_id, turn, body, with_user=True)


@blp.route("/<conversation_id>/messages/<message_id>", methods=["PUT"])
@blp.arguments(EditSchema())
@blp.response(201, TurnResultSchema)
@blp.doc(responses=STREAM_DOC)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or message.")
@blp.alt_response(422, schema=ErrorSchema, description="Not a user message, or a choice the model cannot take.")
@blp.alt_response(503, schema=ErrorSchema, description=UNAVAILABLE_DOC)
def edit(body, conversation_id, message_id):
    """Edit a user message: a new version becomes active and the conversation continues from it."""
    turn = _chat().start(current_user(), conversation_id, kind="edit", target_id=message_id,
                         text=body.get("text"), files=body.get("files"), model=body.get("model"),
                         tools=body.get("tools"), settings=body.get("settings"))
    return answer(conversation_id, turn, body, with_user=True)


@blp.route("/<conversation_id>/messages/<message_id>/regenerate", methods=["POST"])
@blp.arguments(RegenerateSchema(), required=False)
@blp.response(201, TurnResultSchema)
@blp.doc(responses=REGENERATE_STREAM_DOC)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or message.")
@blp.alt_response(422, schema=ErrorSchema, description="Not a model reply.")
@blp.alt_response(503, schema=ErrorSchema, description=UNAVAILABLE_DOC)
def regenerate(body, conversation_id, message_id):
    """Write a new version of a model reply, optionally with another model."""
    body = body or {}
    turn = _chat().start(current_user(), conversation_id, kind="regenerate", target_id=message_id,
                         model=body.get("model"), tools=body.get("tools"), settings=body.get("settings"))
    return answer(conversation_id, turn, body, with_user=False)


@blp.route("/<conversation_id>/messages/<message_id>/select", methods=["POST"])
@blp.response(200, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or message.")
@blp.alt_response(503, schema=ErrorSchema, description=STORE_UNAVAILABLE)
def select(conversation_id, message_id):
    """Make a version active, with its ancestors and the branch last active below it."""
    services = current_app.extensions["apsara"]
    return jsonify(services.manager.select(current_user(), conversation_id, message_id))


EVENTS_DOC = {"200": {"description": "The reply's events from reply_start on (those after the given id), with the "
                                     "ids its stream gave them, then live until it ends with done or error.",
                      "content": stream_content(with_user=False)}}


LAST_EVENT_ID_DOC = {"in": "header", "name": "Last-Event-ID", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 10 ** 18 - 1},
                     "description": "Resume after this event id (wins over `after`): ASCII digits, else 422."}


@blp.route("/<conversation_id>/messages/<reply_id>/events", methods=["GET"])
@blp.arguments(EventsQuerySchema(), location="query")
@blp.response(200)
@blp.doc(responses=EVENTS_DOC, parameters=[LAST_EVENT_ID_DOC])
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or reply.")
def events(query, conversation_id, reply_id):
    """Follow a reply from any worker: replay its events after an id, then live until it ends."""
    after = query.get("after", 0)
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        after = _event_id(header)
    return sse_response(_chat().follow(current_user(), conversation_id, reply_id, after))


def _event_id(header: str) -> int:
    """The Last-Event-ID header's id, refused (422, as a bad `?after=` is) unless it is ASCII digits.

    str.isdigit() is not enough: it takes superscripts and other scripts' digits, which int() refuses.
    """
    value = header.strip()
    if not EVENT_ID.fullmatch(value):
        raise ApiError(422, "Last-Event-ID must be an event id (a whole number, at most 18 digits)",
                       {"Last-Event-ID": ["not a whole number"]})
    return int(value)


@blp.route("/<conversation_id>/messages/<reply_id>/stop", methods=["POST"])
@blp.response(200, ReplyResultSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or reply.")
@blp.alt_response(503, schema=ErrorSchema, description=STORE_UNAVAILABLE)
def stop(conversation_id, reply_id):
    """Stop a reply being written (from any worker): Gemini's request is closed, what arrived is kept."""
    return jsonify({"reply": _chat().stop(current_user(), conversation_id, reply_id)})
