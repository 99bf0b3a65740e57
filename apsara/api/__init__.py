"""HTTP views, one blueprint per resource, and the OpenAPI document built from them.

Views take their arguments' schemas as instances, made once: given a class, webargs
makes a new schema for every request, and marshmallow copies each of its fields to
do so (~0.25 ms of a turn's ~5 ms before its first delta). Loading keeps no state
on the schema, so one serves every request.
"""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from ..config import VERSION
from ..schemas import ErrorSchema
from .bodies import check_body


class ApsaraApi(Api):
    # Document errors with the service's own envelope, not flask-smorest's.
    ERROR_SCHEMA = ErrorSchema


def register_api(app: Flask) -> None:
    from . import conversations, files, generate, health, messages, models, route, usage
    from .docs import register_docs

    app.config.update(
        API_TITLE="Apsara-2.5",
        API_VERSION=VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Chat backend for Google's Gemini models."},
            "components": {"securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Needed when the server sets APSARA_API_KEYS."}}},
            "security": [{"bearer": []}],
        },
    )
    register_docs(app)
    app.before_request(check_body)
    api = ApsaraApi(app)
    for module in (health, models, conversations, messages, files, generate, route, usage):
        api.register_blueprint(module.blp)
    # OpenAI's API: a plain blueprint, kept out of this OpenAPI document (its contract is OpenAI's).
    from . import openai
    app.register_blueprint(openai.blp)
