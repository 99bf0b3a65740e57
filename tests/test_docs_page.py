"""The docs page in a real browser: it renders every operation with no request leaving the server."""
from __future__ import annotations

import pytest

from tests.browser import browser, visit  # noqa: F401 (fixtures)
from tests.servers import call, gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("docs") / "data"
    with gunicorn({"APSARA_DATA_DIR": str(data)}, workers=1) as base:
        yield base


def _operations(base) -> list[tuple[str, str]]:
    spec = call("GET", f"{base}/api/v1/openapi.json")[1]
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")]


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


def test_home_leads_to_the_docs_page(visit, server):
    seen = visit(f"{server}/")
    assert seen.page.url == f"{server}/api/v1/docs"
    seen.page.wait_for_selector(".opblock")
    assert seen.foreign == []
