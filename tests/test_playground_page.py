"""The playground's page and assets as served: a strict policy, sensible caching, nothing from elsewhere.

What the page does is tested in a real browser (test_playground.py); here, what any
client of `/` gets.
"""
from __future__ import annotations

import re

from apsara.playground import STATIC, assets_version

YEAR_S = 365 * 24 * 3600


def _assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/playground/[^"]+)"', page)


def test_home_is_the_playground_with_a_strict_policy(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = dict(item.strip().split(" ", 1) for item in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"  # innerHTML with a string throws
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.get_data(as_text=True)
    assert 'href="/api/v1/docs"' in page  # the docs stay one click away
    assert "<script>" not in page and "style=" not in page  # nothing inline for the policy to refuse


def test_home_is_revalidated_and_assets_are_kept_a_year(client):
    home = client.get("/")
    assert home.cache_control.no_cache and home.headers["ETag"]
    assert client.get("/", headers={"If-None-Match": home.headers["ETag"]}).status_code == 304
    assets = _assets(home.get_data(as_text=True))
    version = assets_version()
    assert {url.split("/")[2] for url in assets} == {version}
    assert {url.rsplit("/", 1)[1] for url in assets} == {"icon.svg", "style.css", "app.js"}
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200
        assert response.cache_control.max_age == YEAR_S and response.cache_control.immutable
        assert "Content-Security-Policy" in response.headers


def test_every_module_the_page_imports_is_served_and_nothing_comes_from_elsewhere(client):
    version = assets_version()
    sources = {path.name: path.read_text() for path in STATIC.iterdir()}
    imported = {name for text in sources.values() for name in re.findall(r'from "\./([\w.-]+\.js)"', text)}
    assert imported >= {"api.js", "dom.js", "markdown.js", "messages.js"}
    for name in imported:
        response = client.get(f"/playground/{version}/{name}")
        assert response.status_code == 200 and response.mimetype == "text/javascript", name
    for name, text in sources.items():
        assert not re.search(r"(?<![\w?])(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I) or name == "icon.svg", name
        assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write|\beval\(|new Function", text), name


def test_only_the_pages_own_assets_are_served(client):
    version = assets_version()
    assert client.get(f"/playground/{version}/index.html").status_code == 404   # the page itself is `/`
    assert client.get(f"/playground/{version}/nothing.js").status_code == 404
    assert client.get(f"/playground/{version}/..%2F__init__.py").status_code == 404
    # A page of another release still gets the asset, but no browser keeps it.
    stale = client.get("/playground/000000000000/app.js")
    assert stale.status_code == 200 and stale.cache_control.no_store


def test_pictures_may_come_from_the_public_url(tmp_path):
    from apsara import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path, public_url="https://api.example.com/chat"))
    policy = app.test_client().get("/").headers["Content-Security-Policy"]
    assert "img-src 'self' blob: https://api.example.com;" in policy
    assert "connect-src 'self';" in policy
