"""Conversations: create, list and search, get, change, delete; export, import, fork."""
from __future__ import annotations

from pathlib import Path

from flask import Response, current_app, jsonify, request
from flask_smorest import Blueprint
from marshmallow import RAISE

from ..auth import current_user
from ..conversations.filters import ListFilters
from ..errors import ApiError
from ..schemas import (CONVERSATION_LINKS, ConversationCreateSchema, ConversationExportSchema,
                       ConversationListSchema, ConversationPatchSchema, ConversationSchema, ErrorSchema,
                       ExportQuerySchema, ForkSchema, ImportResultSchema, ImportUploadSchema, ListQuerySchema,
                       STORE_UNAVAILABLE, TokenCountSchema)
from .bodies import parse_json_body

blp = Blueprint("conversations", __name__, url_prefix="/api/v1/conversations",
                description="Conversations (sessions) and their settings.")


def manager():
    return current_app.extensions["apsara"].manager


def created(body, status=201):
    response = jsonify(body)
    response.status_code = status
    return response


@blp.route("", methods=["POST"])
@blp.arguments(ConversationCreateSchema(), required=False)
@blp.response(201, ConversationSchema)
@blp.doc(responses=CONVERSATION_LINKS)
@blp.alt_response(409, schema=ErrorSchema, description="The id is taken.")
@blp.alt_response(422, schema=ErrorSchema, description="Invalid field, or a model/tool/thinking choice that does not fit.")
def new(body):
    """Start a conversation: model, system instruction, tools and settings are all optional."""
    return created(manager().create(current_user(), body or {}))


@blp.route("", methods=["GET"])
@blp.arguments(ListQuerySchema(), location="query", unknown=RAISE)
@blp.response(200, ConversationListSchema)
def all(query):
    """List conversations, newest `updated_at` first, `limit` at a time; `q` searches them.

    Archived and temporary conversations are left out unless asked for; each flag set to `true`
    lists only conversations that have it."""
    filters = ListFilters(archived=query["archived"], pinned=query["pinned"], temporary=query["temporary"])
    items, next_cursor = manager().list(current_user(), query["limit"], query.get("cursor"), filters,
                                        query.get("q"))
    return jsonify({"conversations": items, "next_cursor": next_cursor})


def transfers():
    return current_app.extensions["apsara"].transfers


@blp.route("/import", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {
    "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
                         "example": [{"title": "...", "mapping": {}, "current_node": "..."}]},
    "multipart/form-data": {"schema": ImportUploadSchema}}})
@blp.response(201, ImportResultSchema)
@blp.alt_response(413, schema=ErrorSchema, description="Larger than APSARA_MAX_IMPORT_MB.")
@blp.alt_response(415, schema=ErrorSchema, description="Neither JSON nor a multipart upload.")
@blp.alt_response(422, schema=ErrorSchema, description="Not JSON, not an export this server can read, a value "
                                                       "it cannot keep (a time before 1970 or from 2200 on, a "
                                                       "whole number past 64 bits, a part without its fields) "
                                                       "or more than one file; nothing is stored.")
@blp.alt_response(503, schema=ErrorSchema, description="The import was taken back before it ended (another "
                                                       "server judged it abandoned), or the database is away; "
                                                       "nothing is stored: send it again.")
def import_(*_args):
    """Import an Apsara export, a ChatGPT `conversations.json` or an Open WebUI export: all or nothing."""
    summaries, skipped = transfers().import_document(current_user(), _export_document())
    return created({"conversations": summaries, "skipped": skipped})


def _export_document():
    """The uploaded document: the JSON body itself (already checked), or the multipart field `file`."""
    if request.is_json:
        return parse_json_body(request.get_data(cache=True))
    unexpected = sorted(set(request.form) | (set(request.files) - {"file"}))
    if unexpected:
        raise ApiError(422, f"unknown field '{unexpected[0]}'", {name: ["Unknown field."] for name in unexpected})
    if len(request.files.getlist("file")) > 1:  # one would be read and the others thrown away
        raise ApiError(422, "send one export per import", {"file": ["Send one file per import."]})
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(422, "send the export in the multipart field 'file'", {"file": ["Missing data for "
                                                                                      "required field."]})
    temp_path = Path(upload.stream.name) if isinstance(getattr(upload.stream, "name", None), str) else None
    try:
        raw = upload.stream.read()
    finally:
        upload.stream.close()
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
    try:
        return parse_json_body(raw)
    except ApiError as refused:
        raise ApiError(422, f"the file cannot be imported: {refused.message}", {"file": [refused.message]}) from None


@blp.route("/<conversation_id>/export", methods=["GET"])
@blp.arguments(ExportQuerySchema(), location="query")
@blp.response(200, ConversationExportSchema, content_type="application/json")
@blp.doc(responses={"200": {"description": "The export (JSON), or the active path (`format=markdown`).",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConversationExport"}},
                                        "text/markdown": {"schema": {"type": "string"}}}}})
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
def export(query, conversation_id):
    """Export a conversation: JSON with its whole tree (enough to restore it exactly), or its active
    path as Markdown."""
    if query["format"] == "markdown":
        text = transfers().export_markdown(current_user(), conversation_id)
        return Response(text, mimetype="text/markdown")
    return jsonify(transfers().export_json(current_user(), conversation_id, query.get("files") == "inline"))


@blp.route("/<conversation_id>/fork", methods=["POST"])
@blp.arguments(ForkSchema())
@blp.response(201, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or message.")
@blp.alt_response(409, schema=ErrorSchema, description="The id is taken.")
@blp.alt_response(503, schema=ErrorSchema, description=STORE_UNAVAILABLE)
def fork(body, conversation_id):
    """Start a new conversation from the path up to and including a message: new message ids, the same
    model, instruction, tools and settings, files shared."""
    return created(transfers().fork(current_user(), conversation_id, body))


@blp.route("/<conversation_id>", methods=["GET"])
@blp.response(200, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
def get(conversation_id):
    """One conversation with the messages of its active path."""
    return jsonify(manager().get(current_user(), conversation_id))


@blp.route("/<conversation_id>", methods=["PATCH"])
@blp.arguments(ConversationPatchSchema())
@blp.response(200, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
@blp.alt_response(503, schema=ErrorSchema, description=STORE_UNAVAILABLE)
def put(changes, conversation_id):
    """Change title, model, system instruction, tools or settings (merged key by key)."""
    return jsonify(manager().update(current_user(), conversation_id, changes))


@blp.route("/<conversation_id>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
@blp.alt_response(503, schema=ErrorSchema, description=STORE_UNAVAILABLE)
def delete(conversation_id):
    """Delete a conversation and all its versions (its files stay)."""
    current_app.extensions["apsara"].chat.delete_conversation(current_user(), conversation_id)
    return "", 204


@blp.route("/<conversation_id>/tokens", methods=["GET"])
@blp.response(200, TokenCountSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
@blp.alt_response(503, schema=ErrorSchema, description="No Gemini key configured.")
def tokens(conversation_id):
    """Tokens the next turn would send (Gemini's countTokens), next to the model's input limit."""
    chat = current_app.extensions["apsara"].chat
    return jsonify(chat.conversation_tokens(current_user(), conversation_id))
