"""HTTP views, one blueprint per resource, and the OpenAPI document built from them."""
from __future__ import annotations

from flask import Flask, current_app, request
from flask_smorest import Api

from ..config import VERSION
from ..errors import ApiError
from ..schemas import ErrorSchema


class ApsaraApi(Api):
    # Document errors with the service's own envelope, not flask-smorest's.
    ERROR_SCHEMA = ErrorSchema


JSON_BODY_LIMIT = 16 * 1024 * 1024
IMPORT_PATH = "/api/v1/conversations/import"


def require_json_body() -> None:
    """A body we would ignore is refused instead: JSON only, except uploads.

    Uploads may be as large as APSARA_MAX_UPLOAD_MB; JSON bodies never need more
    than 16 MB, and werkzeug refuses larger ones with 413 before reading them.
    """
    if request.path == IMPORT_PATH:
        # An export is a document of its own size, JSON or a multipart upload: its own limit.
        framing = 4096 if request.mimetype == "multipart/form-data" else 0  # the part's own headers
        request.max_content_length = current_app.extensions["apsara"].settings.import_limit_bytes + framing
    elif request.path != "/api/v1/files":
        request.max_content_length = min(JSON_BODY_LIMIT, current_app.config["MAX_CONTENT_LENGTH"])
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/api/"):
        return
    if request.path == IMPORT_PATH:
        if not (request.is_json or request.mimetype == "multipart/form-data"):
            raise ApiError(415, "send the export as application/json, or as multipart/form-data in the field "
                                "'file'")
        return
    if request.path.startswith("/api/v1/files") or not (request.content_length or request.is_json):
        return
    if not request.is_json:
        raise ApiError(415, "send the request body as application/json")


def register_api(app: Flask) -> None:
    from . import conversations, files, generate, health, messages, models, route

    app.config.update(
        API_TITLE="Apsara-2.5",
        API_VERSION=VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "info": {"description": "Chat backend for Google's Gemini models."},
            "components": {"securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Needed when the server sets APSARA_API_KEYS."}}},
            "security": [{"bearer": []}],
        },
    )
    app.before_request(require_json_body)
    api = ApsaraApi(app)
    for module in (health, models, conversations, messages, files, generate, route):
        api.register_blueprint(module.blp)
