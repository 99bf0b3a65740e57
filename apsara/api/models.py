"""`GET /api/v1/models` and `GET /api/v1/tools`: what a conversation can choose."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from ..conversations.options import auto_model
from ..gemini.tools import TOOL_DESCRIPTIONS
from ..schemas import ModelListSchema, ToolListSchema

blp = Blueprint("models", __name__, url_prefix="/api/v1", description="Models and tools.")


@blp.route("/models", methods=["GET"])
@blp.response(200, ModelListSchema)
def all_models():
    """The models that can be chosen, live from the Gemini API when it can be reached."""
    services = current_app.extensions["apsara"]
    models = [m.to_dict() for m in services.catalog.models()]
    models.append(auto_model(services.catalog).to_dict())
    default, note = services.catalog.default_model(services.settings.default_model)
    body = {"default": default, "source": services.catalog.source, "models": models}
    if note:
        body["default_note"] = note
    return jsonify(body)


@blp.route("/tools", methods=["GET"])
@blp.response(200, ToolListSchema)
def all_tools():
    """The tools a conversation can switch on."""
    return jsonify({"tools": [{"id": k, "description": v} for k, v in TOOL_DESCRIPTIONS.items()]})
