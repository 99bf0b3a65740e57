"""One error envelope for everything; the OpenAPI document."""
from __future__ import annotations

import logging

from apsara import create_app
from tests.conftest import make_settings


def _is_envelope(body, code):
    error = body["error"]
    assert error["code"] == code
    assert set(error) == {"code", "status", "message", "details"}
    return error


def test_unknown_route_and_method(client):
    _is_envelope(client.get("/api/v1/nope").json, 404)
    _is_envelope(client.get("/nope").json, 404)
    response = client.put("/api/v1/conversations")
    assert _is_envelope(response.json, 405)["status"] == "METHOD_NOT_ALLOWED"


def test_body_too_large_is_413(tmp_path):
    app = create_app(make_settings(tmp_path, max_upload_mb=1))
    response = app.test_client().post("/api/v1/conversations", data=b"x" * (3 * 1024 * 1024),
                                      content_type="application/json")
    assert _is_envelope(response.json, 413)["status"] == "PAYLOAD_TOO_LARGE"


def test_crash_is_a_plain_500_without_trace(app, tmp_path, caplog):
    def explode():
        raise RuntimeError(f"secret detail in {tmp_path}")

    app.add_url_rule("/api/v1/explode", "explode", explode)
    with caplog.at_level(logging.ERROR, logger="apsara"):
        response = app.test_client().get("/api/v1/explode")
    error = _is_envelope(response.json, 500)
    assert error["status"] == "INTERNAL" and error["message"] == "internal error"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and str(tmp_path) not in text and "secret" not in text
    assert "secret detail" in caplog.text  # the trace goes to the log only


def test_auth_off_warns_at_start(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="apsara"):
        create_app(make_settings(tmp_path))
    assert "authentication is OFF" in caplog.text


def test_openapi_document_covers_the_api(client):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert {"/api/v1/conversations", "/api/v1/conversations/{conversation_id}",
            "/api/v1/models", "/api/v1/tools", "/health"} <= set(paths)
    assert set(paths["/api/v1/conversations/{conversation_id}"]) >= {"get", "patch", "delete"}
    create = paths["/api/v1/conversations"]["post"]
    assert "201" in create["responses"] and "409" in create["responses"]
    assert "bearer" in spec["components"]["securitySchemes"]
    assert client.get("/api/v1/docs").status_code == 200


def test_models_and_tools_lists(client):
    models = client.get("/api/v1/models").json
    assert models["default"] == "gemini-3.8-flash"
    ids = [m["id"] for m in models["models"]]
    assert "gemini-3.8-flash" in ids and "gemini-3.1-flash-image" in ids
    flash = next(m for m in models["models"] if m["id"] == "gemini-3.8-flash")
    assert flash["thinking"]["levels"] == ["low", "medium", "high"]
    assert "google_search" in flash["tools"]
    tools = client.get("/api/v1/tools").json["tools"]
    assert {t["id"] for t in tools} >= {"google_search", "url_context", "code_execution",
                                        "image_generation", "get_current_time", "calculator"}
    assert all(t["description"] for t in tools)


def test_openapi_document_is_valid_openapi(client):
    from openapi_spec_validator import validate

    spec = client.get("/api/v1/openapi.json").json
    validate(spec)  # raises on any error, dangling references included
    not_found = spec["paths"]["/api/v1/conversations/{conversation_id}"]["get"]["responses"]["404"]
    assert not_found["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
