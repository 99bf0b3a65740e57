"""The playground in a real browser, against real Gunicorn and the wire-level Gemini fake.

Each test drives the page as a person would (clicks, keys, files) and checks what it
shows, what the server stored and what Gemini was sent; and that no request left the
server and the page logged no error.
"""
from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from apsara.testing.fake_gemini import FakeGemini, Reply
from tests.servers import ROOT, call, gunicorn
from tests.test_files import png_bytes

pytestmark = pytest.mark.slow
API = "/api/v1/conversations"


@pytest.fixture(scope="module")
def fake():
    server = FakeGemini().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    data = tmp_path_factory.mktemp("playground") / "data"
    env = {"APSARA_DATA_DIR": str(data), "gemini": "test-key", "GEMINI_BASE_URL": fake.url}
    with gunicorn(env, workers=1) as base:
        yield base


@pytest.fixture(autouse=True)
def fresh_fake(fake):
    fake.script.clear()
    fake.default = None
    fake.requests.clear()
    yield


def open_playground(visit, base, **options):
    seen = visit(f"{base}/", **options)
    seen.page.wait_for_selector("body[data-ready=true]")
    return seen


def clean(seen, allowed_console=()):
    """No request left the server, no script error, no logged error but those expected."""
    assert seen.foreign == []
    assert seen.errors == []
    assert [text for text in seen.console if not any(part in text for part in allowed_console)] == []


def send(page, text):
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def wait_idle(page):
    """The reply is written and the page shows the stored conversation."""
    page.wait_for_selector("#send:not([hidden])")
    page.wait_for_selector(".message.model:not([data-status=streaming])")


def conversation(base, conversation_id):
    return call("GET", f"{base}{API}/{conversation_id}")[1]


def current_id(page) -> str:
    return page.evaluate("decodeURIComponent(location.hash.slice(4))")


def image_part(data: bytes) -> dict:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}


GROUNDING = {"webSearchQueries": ["kyoto weather"],
             "groundingChunks": [{"web": {"uri": "https://weather.example/kyoto", "title": "Kyoto weather"}}]}


def test_new_conversation_with_settings_streams_every_kind_of_part(visit, server, fake):
    hold = threading.Event()
    fake.push(Reply(hold=hold, parts=[{"text": "Weighing the forecast.", "thought": True}, "It is **mild**. See",
                           " https://weather.example/kyoto for more.",
                           {"executableCode": {"language": "PYTHON", "code": "print(6*7)"}},
                           {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}},
                           image_part(png_bytes(8, 8, (0, 128, 255)))],
                    grounding=GROUNDING, chunk_delay_s=0.05))
    seen = open_playground(visit, server)
    page = seen.page
    page.select_option("#setting-model", "gemini-3.1-pro-preview")
    page.fill("#setting-system", "You are a weather bot.")
    page.check("#setting-tools input[value=google_search]")
    page.check("#setting-tools input[value=code_execution]")
    page.select_option("#setting-thinking", "low")
    page.check("#setting-thoughts")
    send(page, "Weather in Kyoto?")
    # While it is written: the thought so far, open; Stop instead of Send.
    live = page.locator(".message.model[data-status=streaming]")
    live.locator("details.thoughts[open]").wait_for()
    assert "Weighing the forecast." in live.inner_text()
    assert page.locator("#stop").is_visible() and not page.locator("#send").is_visible()
    hold.set()
    wait_idle(page)
    page.screenshot(path=os.environ.get("SHOT", "/tmp/shot.png"), full_page=True)

    reply = page.locator(".message.model")
    assert reply.locator("details.thoughts summary").inner_text() == "Thoughts"
    assert reply.locator("details.thoughts").get_attribute("open") is None  # stored replies fold thoughts
    assert reply.locator(".text strong").inner_text() == "mild"
    link = reply.locator(".text a")
    assert link.get_attribute("href") == "https://weather.example/kyoto"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert reply.locator(".code-part code").inner_text() == "print(6*7)"
    assert reply.locator(".code-result code").inner_text().strip() == "42"
    assert reply.locator(".sources a").inner_text() == "Kyoto weather"
    picture = reply.locator(".picture img")
    picture.wait_for()
    page.wait_for_function("document.querySelector('.picture img').naturalWidth === 8")
    assert page.locator(".message.user .body").inner_text() == "Weather in Kyoto?"

    stored = conversation(server, current_id(page))
    assert stored["model"] == "gemini-3.1-pro-preview" and stored["tools"] == ["google_search", "code_execution"]
    assert stored["settings"]["thinking_level"] == "low" and stored["settings"]["include_thoughts"] is True
    body = fake.last_body()
    assert body["systemInstruction"]["parts"][0]["text"] == "You are a weather bot."
    assert page.locator(f"#conversations a[data-id='{stored['id']}']").count() == 1
    assert page.locator("#conversation-title").inner_text() == (stored["title"] or "Untitled")
    clean(seen)
