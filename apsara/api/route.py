"""`POST /api/v1/route`: what the `auto` model would choose, without generating."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from ..auth import current_user
from ..schemas import ErrorSchema, RouteSchema, RoutingSchema

blp = Blueprint("route", __name__, url_prefix="/api/v1", description="Automatic model choice.")


@blp.route("/route", methods=["POST"])
@blp.arguments(RouteSchema())
@blp.response(200, RoutingSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such conversation or file.")
def route(body):
    """The model, tier and reason `auto` would pick for this text (for previews and evaluation)."""
    return jsonify(current_app.extensions["apsara"].chat.preview_route(current_user(), body))
