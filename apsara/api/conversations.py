"""Conversations: create, list, get, change, delete."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import RAISE

from ..auth import current_user
from ..schemas import (CONVERSATION_LINKS, ConversationCreateSchema, ConversationListSchema,
                       ConversationPatchSchema, ConversationSchema, ErrorSchema, ListQuerySchema, TokenCountSchema)

blp = Blueprint("conversations", __name__, url_prefix="/api/v1/conversations",
                description="Conversations (sessions) and their settings.")


def manager():
    return current_app.extensions["apsara"].manager


def created(body, status=201):
    response = jsonify(body)
    response.status_code = status
    return response


@blp.route("", methods=["POST"])
@blp.arguments(ConversationCreateSchema, required=False)
@blp.response(201, ConversationSchema)
@blp.doc(responses=CONVERSATION_LINKS)
@blp.alt_response(409, schema=ErrorSchema, description="The id is taken.")
@blp.alt_response(422, schema=ErrorSchema, description="Invalid field, or a model/tool/thinking choice that does not fit.")
def new(body):
    """Start a conversation: model, system instruction, tools and settings are all optional."""
    return created(manager().create(current_user(), body or {}))


@blp.route("", methods=["GET"])
@blp.arguments(ListQuerySchema, location="query", unknown=RAISE)
@blp.response(200, ConversationListSchema)
def all(query):
    """List conversations, newest `updated_at` first, `limit` at a time."""
    items, next_cursor = manager().list(current_user(), query["limit"], query.get("cursor"))
    return jsonify({"conversations": items, "next_cursor": next_cursor})


@blp.route("/<conversation_id>", methods=["GET"])
@blp.response(200, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
def get(conversation_id):
    """One conversation with the messages of its active path."""
    return jsonify(manager().get(current_user(), conversation_id))


@blp.route("/<conversation_id>", methods=["PATCH"])
@blp.arguments(ConversationPatchSchema)
@blp.response(200, ConversationSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
def put(changes, conversation_id):
    """Change title, model, system instruction, tools or settings (merged key by key)."""
    return jsonify(manager().update(current_user(), conversation_id, changes))


@blp.route("/<conversation_id>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation.")
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
