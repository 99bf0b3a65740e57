"""The docs page in a real browser: it renders every operation with no request leaving the server."""
from __future__ import annotations

import re

import pytest

from tests.servers import call, gunicorn

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("docs") / "data"
    with gunicorn({"APSARA_DATA_DIR": str(data)}, workers=1) as base:
        yield base


def _operations(base) -> list[tuple[str, str]]:
    spec = call("GET", f"{base}/api/v1/openapi.json")[1]
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")]


@pytest.mark.slow
def test_docs_page_renders_every_operation_offline(visit, server):
    seen = visit(f"{server}/api/v1/docs")
    page = seen.page
    operations = _operations(server)
    page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {len(operations)}")
    assert "Apsara-2.5" in page.inner_text(".info .title")
    shown = {(block.query_selector(".opblock-summary-method").inner_text(),
              block.query_selector(".opblock-summary-path").get_attribute("data-path"))
             for block in page.query_selector_all(".opblock")}
    assert {method for method, _ in shown} >= {"GET", "POST", "PATCH", "DELETE"}
    assert shown == set(operations)
    page.wait_for_load_state("networkidle")
    assert seen.foreign == [], "the docs page asked another server for something"
    assert any(url.endswith("/swagger-ui-bundle.js") for url in seen.requests)
    assert any(url.endswith("/api/v1/openapi.json") for url in seen.requests)
    assert seen.errors == []


def test_the_page_names_only_this_servers_assets(client):
    page = client.get("/api/v1/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(url.startswith("/api/v1/docs/swagger-ui-") for url in assets), assets
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200 and response.cache_control.max_age >= 86400
    assert client.get(assets[0].rsplit("/", 1)[0] + "/index.html").status_code == 404  # only what the page loads
