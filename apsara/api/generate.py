"""`POST /api/v1/generate`: one stateless turn, nothing stored."""
from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint

from ..auth import current_user
from ..schemas import ErrorSchema, GenerateResultSchema, GenerateSchema, stream_content
from .messages import answer

blp = Blueprint("generate", __name__, url_prefix="/api/v1", description="One-shot generation.")


@blp.route("/generate", methods=["POST"])
@blp.arguments(GenerateSchema())
@blp.response(200, GenerateResultSchema)
@blp.doc(responses={"200": {"description": "The reply as JSON, or as server-sent events when streaming.",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/GenerateResult"}},
                                **stream_content(with_user=False)}}})
@blp.alt_response(422, schema=ErrorSchema, description="A model, tool, file or setting this turn cannot use.")
@blp.alt_response(503, schema=ErrorSchema, description="No Gemini key configured, or Gemini unavailable.")
def generate(body):
    """One turn with no conversation: same validation, tools, files and streaming; nothing is stored."""
    turn = current_app.extensions["apsara"].chat.start_stateless(current_user(), body)
    return answer(None, turn, body, with_user=False, success=200)
