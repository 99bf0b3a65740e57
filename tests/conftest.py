"""Fixtures: a fresh app with its own data folder per test, clients, and users."""
from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from apsara import create_app
from apsara.config import Settings


def _more_descriptors(wanted: int = 65536) -> None:
    """The suite makes hundreds of apps, whose databases stay open until collected: a soft
    limit of 1,024 descriptors (some machines' default) is too few for one test process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_more_descriptors()

from tests.postgres import STORE  # noqa: E402 (one copy, however this module is imported)


def data_dir(tmp_path) -> Path:
    """A test's data folder; relative to the working directory under APSARA_TEST_RELATIVE_DATA_DIR=1.

    test_data_dir.py runs part of the suite that way from another working
    directory, as `make run`'s default `data` is relative.
    """
    folder = tmp_path / "data"
    return Path(os.path.relpath(folder)) if os.environ.get("APSARA_TEST_RELATIVE_DATA_DIR") == "1" else folder


def make_settings(tmp_path, **overrides) -> Settings:
    # Automatic titles run beside a conversation's first reply; tests of other things turn them
    # off so the events and records they count are only their own (tests of titles turn them on).
    base = dict(data_dir=data_dir(tmp_path), gemini_api_key=None, secret_key="test-secret",
                gemini_retry_attempts=1, gemini_timeout_s=10.0, auto_titles=False,
                database_url=STORE["database_url"])
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def postgres_url():
    """One throwaway PostgreSQL server for the whole run (started on first use)."""
    from tests.postgres import cluster

    with cluster() as url:
        yield url
        from apsara.database import close_pools

        close_pools()  # before the server goes: no pool thread left reconnecting to it


@pytest.fixture(params=["files", "postgresql"])
def store_kind(request):
    """Runs a test once per store: modules opt in with `pytestmark = pytest.mark.usefixtures("store_kind")`."""
    if request.param == "postgresql":
        from tests.postgres import empty

        if request.node.get_closest_marker("file_format"):
            pytest.skip("about the file store's own format on disk")

        url = request.getfixturevalue("postgres_url")
        empty(url)
        STORE["database_url"] = url
    yield request.param
    STORE["database_url"] = None


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


# -- pages in a real browser (one Chromium for the session) ---------------------------
from tests.browser import browser, visit  # noqa: E402,F401


# -- chat against the wire-level Gemini fake -----------------------------------------
from apsara.testing.fake_gemini import FakeGemini  # noqa: E402


@pytest.fixture
def fake():
    server = FakeGemini().start()
    yield server
    server.stop()


@pytest.fixture
def chat_app(tmp_path, fake):
    return create_app(make_settings(tmp_path, gemini_api_key="test-key-123", gemini_base_url=fake.url,
                                    ping_interval_s=0.2))


@pytest.fixture
def chat(chat_app):
    return chat_app.test_client()


def parse_sse(raw: str) -> tuple[list[tuple[str, int, dict]], int]:
    """SSE text -> ([(event, id, data)], number of ': ping' comments)."""
    import json

    events, pings = [], 0
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        if block.startswith(": ping"):
            pings += 1
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
    return events, pings


def stream_until(client, path: str, body: dict, seen: bytes):
    """A streamed POST read until `seen` has arrived: (what arrived, the rest to come)."""
    chunks = client.post(path, json={**body, "stream": True}, buffered=False).response
    arrived = b""
    while seen not in arrived:
        arrived += next(chunks)
    return arrived, chunks
