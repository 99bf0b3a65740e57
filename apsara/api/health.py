"""`GET /health`: is the server up, is Gemini configured, can we write history."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from ..config import VERSION
from ..schemas import HealthSchema

blp = Blueprint("health", __name__, description="Liveness and readiness.")


@blp.route("/health", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(security=[], responses={"503": {"description": "The data folder is not writable."}})
def health():
    """Server status; 503 when the data folder cannot be written."""
    services = current_app.extensions["apsara"]
    writable = services.store.is_writable()
    body = {"status": "ok" if writable else "degraded", "version": VERSION,
            "gemini": "configured" if services.gemini.configured else "missing",
            "storage": "ok" if writable else "unwritable"}
    # From the model list already loaded: /health never waits on Gemini.
    default, note = services.catalog.default_model(services.settings.default_model, refresh=False)
    body["default_model"] = default
    if note:
        body["default_model_note"] = note
    response = jsonify(body)
    response.status_code = 200 if writable else 503
    return response
