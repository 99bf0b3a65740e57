"""Fixtures: a fresh app with its own data folder per test, clients, and users."""
from __future__ import annotations

import pytest

from apsara import create_app
from apsara.config import Settings


def make_settings(tmp_path, **overrides) -> Settings:
    base = dict(data_dir=tmp_path / "data", gemini_api_key=None, secret_key="test-secret",
                gemini_retry_attempts=1, gemini_timeout_s=10.0)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


class UserClient:
    """A test client that sends one user's Bearer key with every request."""

    def __init__(self, client, key):
        self._client, self._key = client, key

    def __getattr__(self, method):
        call = getattr(self._client, method)

        def with_key(*args, headers=None, **kwargs):
            headers = dict(headers or {})
            if self._key is not None:
                headers.setdefault("Authorization", f"Bearer {self._key}")
            return call(*args, headers=headers, **kwargs)

        return with_key


@pytest.fixture
def users(tmp_path):
    """Two users, alice and bob, on an app with authentication on."""
    app = create_app(make_settings(tmp_path, api_keys={"alice": "key-a", "bob": "key-b"}))
    raw = app.test_client()
    return {"alice": UserClient(raw, "key-a"), "bob": UserClient(raw, "key-b"),
            "nobody": UserClient(raw, None), "app": app}
