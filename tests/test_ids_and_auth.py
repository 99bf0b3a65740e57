"""Hostile ids never touch the disk outside the data folder; users never see each other."""
from __future__ import annotations

import os

import pytest

API = "/api/v1/conversations"

HOSTILE_PATHS = [
    "../x", "..%2Fx", "..%2fsecret", "%2e%2e", "%2e%2e%2fx", ".", "..", "%2Fetc%2Fpasswd",
    "%2F%2Ftmp", "x%00y", "%00", "a" * 65, "trip%E2%80%901", "%EF%BD%94rip", "caf%C3%A9",
    "x.json", "x%2Ejson", "%5C..%5Cx", "C:%5Cx", "~root", "x%20y",
]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("raw", HOSTILE_PATHS)
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_hostile_ids_in_paths(client, settings, tmp_path, raw, method):
    client.post(API, json={"id": "x"})
    before = _tree(tmp_path)
    kwargs = {"json": {"title": "pwned"}} if method == "patch" else {}
    response = getattr(client, method)(f"{API}/{raw}", **kwargs)
    assert response.status_code in (404, 422), (raw, response.status_code)
    assert response.json["error"]["status"] in ("NOT_FOUND", "UNPROCESSABLE")
    assert str(tmp_path) not in response.get_data(as_text=True)
    assert _tree(tmp_path) == before
    assert client.get(f"{API}/x").json["title"] == ""


@pytest.mark.parametrize("bad_id", ["../x", "..", "/etc/passwd", "x\x00y", "a" * 65, "trip\u20101",
                                    "\uff54rip", "caf\u00e9", "x.json", "", "x/y", "x\\y", " x"])
def test_hostile_ids_at_creation_are_422(client, tmp_path, bad_id):
    before = _tree(tmp_path)
    response = client.post(API, json={"id": bad_id})
    assert response.status_code == 422
    assert "id" in response.json["error"]["details"]
    assert _tree(tmp_path) == before


def test_nothing_outside_data_folder_after_many_requests(client, settings, tmp_path):
    for raw in HOSTILE_PATHS:
        client.get(f"{API}/{raw}")
        client.post(API, json={"id": raw})
    outside = [p for p in tmp_path.rglob("*") if not str(p).startswith(str(settings.data_dir))]
    assert outside == []
    assert not os.path.exists(tmp_path / "x")


def test_no_key_or_wrong_key_is_401(users):
    for who, headers in [("nobody", {}), ("nobody", {"Authorization": "Bearer wrong"}),
                         ("nobody", {"Authorization": "Basic key-a"}), ("nobody", {"Authorization": "Bearer"})]:
        response = users[who].get(API, headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["status"] == "UNAUTHENTICATED"
        assert "key-a" not in response.get_data(as_text=True)


def test_open_paths_need_no_key(users):
    assert users["nobody"].get("/health").status_code != 401  # 503 here: no Gemini key
    assert users["nobody"].get("/health/live").status_code == 200
    assert users["nobody"].get("/api/v1/docs").status_code == 200
    assert users["nobody"].get("/api/v1/openapi.json").status_code == 200


def test_user_b_cannot_see_or_touch_user_a(users):
    alice, bob = users["alice"], users["bob"]
    assert alice.post(API, json={"id": "trip-1", "title": "alice's"}).status_code == 201
    for response in (bob.get(f"{API}/trip-1"), bob.patch(f"{API}/trip-1", json={"title": "bob"}),
                     bob.delete(f"{API}/trip-1")):
        assert response.status_code == 404
        assert response.json["error"]["message"] == "conversation 'trip-1' not found"
    assert bob.get(API).json["conversations"] == []
    assert alice.get(f"{API}/trip-1").json["title"] == "alice's"
    # same id, different users: both may own it, and nothing hints at the other
    created = bob.post(API, json={"id": "trip-1", "title": "bob's"})
    assert created.status_code == 201
    assert alice.get(f"{API}/trip-1").json["title"] == "alice's"
    assert [c["title"] for c in bob.get(API).json["conversations"]] == ["bob's"]


def test_missing_id_and_other_users_id_look_the_same(users):
    users["alice"].post(API, json={"id": "secret"})
    other = users["bob"].get(f"{API}/secret")
    missing = users["bob"].get(f"{API}/never-was")
    assert other.status_code == missing.status_code == 404
    assert other.json["error"].keys() == missing.json["error"].keys()
    assert other.headers.get("Content-Length") is not None


def test_bad_key_config_is_refused():
    from apsara.config import ConfigError, parse_api_keys

    assert parse_api_keys("a:1, b:2") == {"a": "1", "b": "2"}
    for raw in ["a", "a:", "../x:1", "a:1,a:2", "a:1,b:1"]:
        with pytest.raises(ConfigError):
            parse_api_keys(raw)
