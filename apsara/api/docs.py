"""The browsable docs page's assets, served by the app itself.

flask-smorest renders `/api/v1/docs`; the Swagger UI scripts and styles it loads
come from the pinned `swagger-ui-bundle-v2` package, so the page works with no
internet and nothing is fetched from a third party. Their URL names the Swagger
UI version, so browsers may keep them for a year.
"""
from __future__ import annotations

from flask import Flask, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from ..errors import ApiError

DOCS_PATH = "/api/v1/docs"
ASSETS_URL = f"{DOCS_PATH}/{swagger_ui_path.name}/"  # e.g. /api/v1/docs/swagger-ui-5.31.0/
# What the page loads; nothing else of the package is served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                    "favicon-16x16.png", "favicon-32x32.png"})
YEAR_S = 365 * 24 * 3600


def asset(name: str):
    if name not in ASSETS:
        raise ApiError(404, "no such resource")
    return send_from_directory(swagger_ui_path, name, max_age=YEAR_S)


def register_docs(app: Flask) -> None:
    app.config.update(OPENAPI_SWAGGER_UI_PATH="docs", OPENAPI_SWAGGER_UI_URL=ASSETS_URL,
                      # No call to Swagger's online validator: the page must work offline.
                      OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None})
    app.add_url_rule(f"{ASSETS_URL}<name>", "docs_asset", asset)
