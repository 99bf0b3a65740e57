"""`GET /health` (readiness) and `GET /health/live` (liveness).

Readiness answers 503 whenever this server cannot serve a chat (no Gemini key,
an unwritable data folder), so a load balancer or the image's HEALTHCHECK sends
it no traffic; liveness only says the process answers, for restarts, and costs
nothing.
"""
from __future__ import annotations

from flask import current_app, jsonify
from flask_smorest import Blueprint

from ..config import VERSION
from ..schemas import HealthSchema, LivenessSchema

blp = Blueprint("health", __name__, description="Liveness and readiness.")


def _gemini_state(services) -> str:
    return services.settings.gemini_upstream if services.gemini.configured else "missing"


@blp.route("/health", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(security=[], responses={"503": {
    "description": "Not ready: no Gemini key is configured, or the data folder cannot be written.",
    "content": {"application/json": {"schema": HealthSchema}}}})
def health():
    """Readiness: 200 when this server can serve a chat, else 503 saying what is missing."""
    services = current_app.extensions["apsara"]
    writable = services.store.is_writable()
    gemini = _gemini_state(services)
    ready = writable and gemini != "missing"
    body = {"status": "ok" if ready else "degraded", "version": VERSION, "gemini": gemini,
            "storage": "ok" if writable else "unwritable"}
    # From the model list already loaded: /health never waits on Gemini.
    default, note = services.catalog.default_model(services.settings.default_model, refresh=False)
    body["default_model"] = default
    if note:
        body["default_model_note"] = note
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response


@blp.route("/health/live", methods=["GET"])
@blp.response(200, LivenessSchema)
@blp.doc(security=[])
def live():
    """Liveness: 200 whenever the process answers (touches neither Gemini nor the disk)."""
    return {"status": "ok"}
