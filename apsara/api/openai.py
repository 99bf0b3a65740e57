"""`/v1/chat/completions` and `/v1/models`: OpenAI's API, so OpenAI's clients and chat apps work unchanged.

The same Bearer keys as `/api` (`APSARA_API_KEYS`). Every error on `/v1/` is in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, unknown paths
included. These routes are not in the `/api/v1` OpenAPI document: their contract
is OpenAI's.
"""
from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..auth import current_user
from ..conversations.options import AUTO
from ..errors import ApiError, uncaught_error
from ..openai_compat import answers
from ..openai_compat.completions import Completions
from ..openai_compat.request import read_request
from .bodies import body_text, read_body

blp = Blueprint("openai", __name__, url_prefix="/v1")


def _completions() -> Completions:
    services = current_app.extensions["apsara"]
    return Completions(services.catalog, services.gemini, services.router, services.usage,
                       services.settings.ping_interval_s)


def _model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "apsara" if model_id == AUTO else "google"}


@blp.route("/chat/completions", methods=["POST"])
def chat_completions():
    """One turn, streamed (OpenAI's chunks, then `data: [DONE]`) or not; nothing is stored."""
    raw = read_body(cache=False)
    try:
        body = orjson.loads(body_text(raw))  # strict: no NaN, UTF-8 alone, no lone surrogate
    except orjson.JSONDecodeError:
        raise answers.OpenAIRequestError("We could not parse the JSON body of your request: send valid "
                                         "JSON (and Content-Type: application/json)") from None
    completions = _completions()
    completion_request = read_request(body)
    turn = completions.prepare(current_user(), completion_request)
    if not completion_request.stream:
        return jsonify(completions.complete(turn))
    response = Response(completions.stream(turn), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@blp.route("/models", methods=["GET"])
def models():
    """Every chat model the service offers, and `auto`."""
    catalog = current_app.extensions["apsara"].catalog
    return jsonify({"object": "list", "data": [_model(m.id) for m in catalog.models()] + [_model(AUTO)]})


@blp.route("/models/<path:model_id>", methods=["GET"])
def model(model_id):
    catalog = current_app.extensions["apsara"].catalog
    if model_id != AUTO and catalog.get(model_id) is None:
        raise answers.OpenAIRequestError(f"The model '{model_id}' does not exist", "model", "model_not_found",
                                         status=404)
    return jsonify(_model(model_id))


@blp.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], strict_slashes=False)
@blp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest):
    # Any other /v1 path answers as OpenAI does, in its shape, not the /api envelope.
    raise answers.OpenAIRequestError(f"Invalid URL ({request.method} {request.path})", status=404)


def _openai_error(error: ApiError):
    response = jsonify(answers.error_body(error))
    response.status_code = answers.http_status(error)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


@blp.errorhandler(ApiError)
def handle_api_error(error: ApiError):
    return _openai_error(error)


@blp.errorhandler(HTTPException)
def handle_http_exception(exc: HTTPException):
    code = exc.code or 500
    message = {413: "request body is too large", 405: "method not allowed"}.get(code, exc.description or exc.name)
    return _openai_error(ApiError(code, message))


@blp.errorhandler(Exception)
def handle_crash(exc: Exception):
    return _openai_error(uncaught_error(exc))
