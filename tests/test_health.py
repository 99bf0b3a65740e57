"""Readiness (`/health`), liveness (`/health/live`) and what a browser on another origin may read."""
from __future__ import annotations

import os

import pytest

from apsara import create_app
from apsara.config import from_env
from tests.conftest import make_settings


def test_ready_with_a_key_names_the_upstream_and_hides_the_key(tmp_path):
    app = create_app(make_settings(tmp_path, gemini_api_key="AIza-very-secret"))
    response = app.test_client().get("/health")
    assert response.status_code == 200
    body = response.json
    assert body == {"status": "ok", "version": body["version"], "gemini": "gemini", "storage": "ok",
                    "default_model": "gemini-3.8-flash"}
    assert body["version"] and "AIza" not in response.get_data(as_text=True)


def test_no_key_is_not_ready_but_alive(client):
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json["status"] == "degraded" and response.json["gemini"] == "missing"
    assert response.json["storage"] == "ok"
    live = client.get("/health/live")
    assert live.status_code == 200 and live.json == {"status": "ok"}


@pytest.mark.parametrize("env, upstream", [
    ({"gemini": "k"}, "gemini"),
    ({"gemini": "k", "GOOGLE_GENAI_USE_VERTEXAI": "true"}, "vertex"),
    ({"gemini": "offline-fake-key", "APSARA_OFFLINE_FAKE": "1"}, "fake"),
])
def test_health_says_which_upstream_answers(tmp_path, env, upstream):
    settings = from_env({"APSARA_DATA_DIR": str(tmp_path / "data"), **env})
    response = create_app(settings).test_client().get("/health")
    assert response.status_code == 200 and response.json["gemini"] == upstream


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_health_degraded_when_storage_unwritable(tmp_path):
    app = create_app(make_settings(tmp_path, gemini_api_key="k"))
    (tmp_path / "data" / "history").chmod(0o500)
    try:
        response = app.test_client().get("/health")
        assert response.status_code == 503 and response.json["status"] == "degraded"
    finally:
        (tmp_path / "data" / "history").chmod(0o700)


def test_health_degraded_when_history_is_not_a_folder(tmp_path):
    app = create_app(make_settings(tmp_path, gemini_api_key="k"))
    history = tmp_path / "data" / "history"
    history.rmdir()
    history.write_text("not a folder")
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.json == {**response.json, "status": "degraded", "storage": "unwritable", "gemini": "gemini"}
    assert app.test_client().get("/health/live").status_code == 200


# -- CORS ------------------------------------------------------------------------------
APP_ORIGIN = "https://app.example"


@pytest.fixture
def cors_client(tmp_path):
    return create_app(make_settings(tmp_path, gemini_api_key="k", cors_origins=[APP_ORIGIN])).test_client()


@pytest.mark.parametrize("path", ["/health", "/health/live", "/api/v1/models"])
def test_a_browser_on_an_allowed_origin_can_read_health_and_the_api(cors_client, path):
    ok = cors_client.get(path, headers={"Origin": APP_ORIGIN})
    assert ok.status_code == 200
    assert ok.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    assert "Origin" in ok.vary
    other = cors_client.get(path, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # the answer differs by origin, so a shared cache must key on it, for every origin
    assert "Origin" in other.vary
    assert "Origin" in cors_client.get(path).vary


def test_preflight_is_cached_by_the_browser(cors_client):
    preflight = cors_client.options("/api/v1/conversations", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.status_code == 200
    assert preflight.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN
    assert "POST" in preflight.headers.get("Access-Control-Allow-Methods", "")
    assert "authorization" in preflight.headers.get("Access-Control-Allow-Headers", "").lower()
    assert int(preflight.headers["Access-Control-Max-Age"]) >= 600
    assert "Origin" in preflight.vary


def test_without_cors_origins_no_cors_headers(client):
    response = client.get("/health/live", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_health_answers_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    health = paths["/health"]["get"]["responses"]
    assert {"200", "503"} <= set(health)
    assert health["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}
    assert "200" in paths["/health/live"]["get"]["responses"]
