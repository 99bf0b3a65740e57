"""The playground in a real browser, against real Gunicorn and the wire-level Gemini fake.

Each test drives the page as a person would (clicks, keys, files) and checks what it
shows, what the server stored and what Gemini was sent; and that no request left the
server and the page logged no error.
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
from pathlib import Path

import pytest

from apsara.testing.fake_gemini import FakeGemini, Reply
from tests.servers import call, gunicorn
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


@pytest.fixture(scope="module")
def offered(server):
    """The operations the server's OpenAPI document lists, as (METHOD, path with `{}` for each id)."""
    spec = call("GET", f"{server}/api/v1/openapi.json")[1]
    operations = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path)) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}
    listing = spec["paths"]["/api/v1/conversations"]["get"].get("parameters", [])
    return operations | {("QUERY", parameter["name"]) for parameter in listing}


def need(offered, *operations):
    """Skip until the server offers these parts of the documented API (they are built alongside the page)."""
    missing = [operation for operation in operations if operation not in offered]
    if missing:
        pytest.skip(f"this server does not offer {missing} yet")


EXPORT = ("GET", "/api/v1/conversations/{}/export")
SEARCH, PINNED, ARCHIVED = ("QUERY", "q"), ("QUERY", "pinned"), ("QUERY", "archived")


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
    page.wait_for_function("() => document.querySelector('.picture img').naturalWidth === 8")
    assert page.locator(".message.user .body").inner_text() == "Weather in Kyoto?"

    stored = conversation(server, current_id(page))
    assert stored["model"] == "gemini-3.1-pro-preview" and stored["tools"] == ["google_search", "code_execution"]
    assert stored["settings"]["thinking_level"] == "low" and stored["settings"]["include_thoughts"] is True
    body = fake.last_body()
    assert body["systemInstruction"]["parts"][0]["text"] == "You are a weather bot."
    assert page.locator(f"#conversations a[data-id='{stored['id']}']").count() == 1
    assert page.locator("#conversation-title").inner_text() == (stored["title"] or "Untitled")
    clean(seen)


def test_edit_a_message_and_move_between_versions(visit, server, fake):
    seen = open_playground(visit, server)
    page = seen.page
    page.fill("#composer-text", "Three days in Kyoto?")
    page.press("#composer-text", "Shift+Enter")  # a new line, not a send
    page.keyboard.type("Budget trip.")
    assert page.input_value("#composer-text") == "Three days in Kyoto?\nBudget trip."
    page.press("#composer-text", "Enter")
    wait_idle(page)
    assert page.locator(".message.model .text").inner_text() == "Echo: Three days in Kyoto?\nBudget trip."

    page.locator(".message.user").get_by_role("button", name="Edit").click()
    editor = page.get_by_role("textbox", name="Edit message")
    assert editor.input_value() == "Three days in Kyoto?\nBudget trip."
    editor.fill("Four days in Osaka?")
    editor.press("Enter")
    wait_idle(page)
    user = page.locator(".message.user")
    assert user.locator(".body").inner_text() == "Four days in Osaka?"
    assert user.locator(".version-count").inner_text() == "2/2"
    assert page.locator(".message.model .text").inner_text() == "Echo: Four days in Osaka?"

    user.get_by_role("button", name="Previous version").click()
    page.wait_for_selector(".message.user .version-count >> text=1/2")
    assert page.locator(".message.model .text").inner_text() == "Echo: Three days in Kyoto?\nBudget trip."
    assert page.locator(".message.user").get_by_role("button", name="Previous version").is_disabled()
    stored = conversation(server, current_id(page))
    assert [m["text"] for m in stored["messages"]][0] == "Three days in Kyoto?\nBudget trip."
    page.locator(".message.user").get_by_role("button", name="Next version").click()
    page.wait_for_selector(".message.user .version-count >> text=2/2")
    assert page.locator(".message.model .text").inner_text() == "Echo: Four days in Osaka?"
    clean(seen)


def test_regenerate_with_another_model(visit, server, fake):
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Name a river.")
    wait_idle(page)
    fake.push(Reply(parts=["The Kamo."]))
    page.locator(".message.model summary", has_text="Regenerate").click()
    page.locator(".message.model .menu-items").get_by_role("button", name="gemini-3.1-flash-lite", exact=True).click()
    page.wait_for_selector(".message.model .version-count >> text=2/2")
    reply = page.locator(".message.model")
    assert reply.locator(".text").inner_text() == "The Kamo."
    assert reply.locator(".meta .badge").inner_text() == "gemini-3.1-flash-lite"
    assert fake.generate_requests()[-1]["model"] == "gemini-3.1-flash-lite"
    reply.get_by_role("button", name="Previous version").click()
    page.wait_for_selector(".message.model .version-count >> text=1/2")
    assert page.locator(".message.model .text").inner_text() == "Echo: Name a river."
    clean(seen)


def test_attach_a_picture(visit, server, fake):
    picture = png_bytes(4, 4, (10, 200, 30)) + os.urandom(512)  # random bytes after a real PNG header
    seen = open_playground(visit, server)
    page = seen.page
    page.set_input_files("#attach", files=[{"name": "garden.png", "mimeType": "image/png", "buffer": picture}])
    chip = page.locator("#attachments li")
    chip.wait_for()
    assert "garden.png" in chip.inner_text()
    send(page, "What is in this picture?")
    wait_idle(page)
    assert page.locator("#attachments li").count() == 0
    page.wait_for_function("() => document.querySelector('.message.user .picture img')?.naturalWidth === 4")
    sent = [part for content in fake.last_body()["contents"] for part in content["parts"]]
    inline = [part.get("inlineData") or part.get("inline_data") for part in sent
              if "inlineData" in part or "inline_data" in part]
    assert inline and base64.urlsafe_b64decode(inline[0]["data"] + "==") == picture
    # An upload the models cannot read is refused with the server's message, and nothing is attached.
    page.set_input_files("#attach", files=[{"name": "tool.exe", "mimeType": "application/octet-stream",
                                            "buffer": b"MZ" + os.urandom(300)}])
    page.wait_for_selector("#composer-error:not([hidden])")
    assert "tool.exe" in page.inner_text("#composer-error")
    assert page.locator("#attachments li").count() == 0
    clean(seen, allowed_console=["status of 415"])


def test_the_auto_models_decision_is_shown_on_each_reply(visit, server, fake):
    seen = open_playground(visit, server)
    page = seen.page
    page.select_option("#setting-model", "auto")
    assert page.locator("#thinking-field").is_hidden()
    send(page, "Hi!")
    wait_idle(page)
    stored = conversation(server, current_id(page))["messages"][1]["routing"]
    routing = page.locator(".message.model .routing").inner_text()
    assert routing.startswith(f"auto chose {stored['model']} ({stored['tier']})")
    assert stored["reason"] in routing
    clean(seen)


def test_asks_for_the_key_when_auth_is_on_and_keeps_it_for_the_tab(visit, tmp_path, fake):
    env = {"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "test-key", "GEMINI_BASE_URL": fake.url,
           "APSARA_API_KEYS": "alice:key-alice,bob:key-bob"}
    with gunicorn(env, workers=1) as base:
        alice = {"Authorization": "Bearer key-alice"}
        picture = png_bytes(6, 6)
        meta = _upload(base, picture, alice)
        assert call("POST", f"{base}{API}", {"id": "alices", "title": "Alice's garden"}, alice)[0] == 201
        assert call("POST", f"{base}{API}/alices/messages", {"text": "Look", "files": [meta["id"]]}, alice)[0] == 201

        seen = visit(f"{base}/#/c/alices")
        page = seen.page
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        page.get_by_label("Bearer key").fill("not-a-key")
        page.get_by_label("Bearer key").press("Enter")
        page.wait_for_selector("#key-error:not([hidden])")
        assert "refused" in page.inner_text("#key-error")
        page.get_by_label("Bearer key").fill("key-alice")
        page.get_by_role("button", name="Use this key").click()
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#conversations a").all_inner_texts()[0].startswith("Alice's garden")
        # The picture's signed URL loads in an <img>, which cannot send the key.
        page.wait_for_function("() => document.querySelector('.message.user .picture img')?.naturalWidth === 6")

        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert not page.get_by_role("dialog").is_visible()  # the key is kept for the tab
        assert page.evaluate("sessionStorage.getItem('apsara.key')") == "key-alice"
        assert page.locator(".message.user .picture img").count() == 1
        clean(seen, allowed_console=["status of 401"])
        page.context.close()  # before this Gunicorn stops: an open keep-alive connection would delay it


def _upload(base, data: bytes, headers: dict) -> dict:
    import urllib.request

    boundary = "playground-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/api/v1/files", data=body, method="POST", headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
# Set to a folder (docs) to refresh the README's screenshots.
SHOTS = os.environ.get("APSARA_SCREENSHOTS_DIR")


def test_readable_on_a_phone_and_screenshots(visit, server, fake):
    fake.push(Reply(parts=[{"text": "Checking the season.", "thought": True},
                           "Late autumn is lovely: the maples turn red. Try `Tofuku-ji` early.",
                           {"executableCode": {"language": "PYTHON", "code": "print(sum([3, 4]))"}},
                           {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "7\n"}},
                           " Seven days fit well.", image_part(png_bytes(96, 64, (200, 80, 40)))],
                    grounding=GROUNDING))
    status, created = call("POST", f"{server}{API}", {"title": "Kyoto in November", "model": "auto",
                                                      "tools": ["google_search", "code_execution"],
                                                      "settings": {"include_thoughts": True}})
    assert status == 201, created
    assert call("POST", f"{server}{API}/{created['id']}/messages", {"text": "When should I visit Kyoto?"})[0] == 201

    desktop = visit(f"{server}/#/c/{created['id']}", viewport={"width": 1280, "height": 800})
    desktop.page.wait_for_selector(".message.model .picture img")
    desktop.page.wait_for_function("() => document.querySelector('.picture img').naturalWidth === 96")
    if SHOTS:
        desktop.page.screenshot(path=str(Path(SHOTS) / "playground-desktop.png"))

    seen = visit(f"{server}/#/c/{created['id']}", **PHONE)
    page = seen.page
    page.wait_for_selector(".message.model .picture img")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    assert not page.locator("#sidebar").is_visible()
    toggle = page.get_by_role("button", name="Show conversations")
    toggle.click()
    assert page.evaluate("document.activeElement.id") == "search"
    assert page.locator("#sidebar").is_visible() and toggle.get_attribute("aria-expanded") == "true"
    page.locator("#conversations a", has_text="Kyoto in November").click()
    page.wait_for_selector("#sidebar", state="hidden")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "playground-phone.png"))
    clean(seen)
    clean(desktop)


def test_delete_a_conversation_from_its_menu(visit, server, fake):
    status, created = call("POST", f"{server}{API}", {"title": "Short-lived"})
    assert status == 201
    seen = visit(f"{server}/#/c/{created['id']}")
    page = seen.page
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#conversation-title") == "Short-lived"
    page.locator("#conversation-actions > summary").click()
    page.keyboard.press("Escape")  # menus close with Escape
    assert not page.get_by_role("button", name="Delete…").is_visible()
    page.locator("#conversation-actions > summary").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete…").click()
    page.wait_for_function("() => location.hash === ''")
    assert page.inner_text("#conversation-title") == "New conversation"
    assert call("GET", f"{server}{API}/{created['id']}")[0] == 404
    page.wait_for_selector(f"#conversations a[data-id='{created['id']}']", state="detached")
    clean(seen)


HOSTILE = ('<img src="/x.png" onerror="document.body.dataset.owned=1"> **bold** [click](javascript:alert(1))\n\n'
           "```html\n<script>document.body.dataset.owned=1</script>\n```\n"
           "[fine](https://example.com/a?b=1) and `<b>code</b>`")


def test_model_text_is_shown_as_text_never_as_html(visit, server, fake):
    fake.push(Reply(parts=[HOSTILE[:40], HOSTILE[40:]]))
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Say something odd.")
    wait_idle(page)
    text = page.locator(".message.model .text")
    assert text.locator("img, script, b").count() == 0
    assert '<img src="/x.png" onerror=' in text.locator("p").first.inner_text()
    assert text.locator("strong").inner_text() == "bold"
    links = text.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.com/a?b=1"
    assert "[click](javascript:alert(1))" in text.inner_text()
    assert text.locator("pre[data-language=html] code").inner_text() == "<script>document.body.dataset.owned=1</script>"
    assert text.locator(":not(pre) > code").inner_text() == "<b>code</b>"
    assert page.evaluate("() => document.body.dataset.owned") is None
    assert not any(url.endswith("/x.png") for url in seen.requests)
    clean(seen)


def test_the_event_reader_takes_any_split_of_the_stream(visit, server):
    """Server-sent events arrive in arbitrary pieces; every split gives the same events."""
    seen = open_playground(visit, server)
    stream = ('event: reply_start\nid: 1\ndata: {"id": "r1"}\n\n: ping\n\n'
              'event: delta\r\nid: 2\r\ndata: {"text": "a\\nb"}\r\n\r\n'
              'event: done\nid: 3\ndata: {"status":\ndata: "complete"}\n\n')
    splits = seen.page.evaluate("""async (stream) => {
        const { EventParser } = await import(document.querySelector("script[type=module]").src.replace("app.js", "api.js"));
        const results = new Set();
        for (let cut = 0; cut <= stream.length; cut++) {
            for (const step of [1, 7, stream.length]) {
                const events = [];
                const parser = new EventParser((name, data, id) => events.push([name, data, id]));
                parser.push(stream.slice(0, cut));
                for (let at = cut; at < stream.length; at += step) parser.push(stream.slice(at, at + step));
                parser.end();
                results.add(JSON.stringify(events));
            }
        }
        return [...results];
    }""", stream)
    assert [json.loads(result) for result in splits] == [[
        ["reply_start", {"id": "r1"}, 1], ["delta", {"text": "a\nb"}, 2], ["done", {"status": "complete"}, 3]]]
    clean(seen)


def test_the_list_pages_on_with_more(visit, tmp_path, fake):
    with gunicorn({"APSARA_DATA_DIR": str(tmp_path / "data"), "gemini": "test-key", "GEMINI_BASE_URL": fake.url},
                  workers=1) as base:
        for n in range(23):
            assert call("POST", f"{base}{API}", {"id": f"c{n:02}", "title": f"Topic {n}"})[0] == 201
        seen = open_playground(visit, base)
        page = seen.page
        items = page.locator("#conversations a")
        assert items.count() == 20
        page.get_by_role("button", name="More").click()
        page.wait_for_function("() => document.querySelectorAll('#conversations a').length === 23")
        shown = [items.nth(n).get_attribute("data-id") for n in range(23)]
        assert sorted(shown) == [f"c{n:02}" for n in range(23)]  # each once, in the server's order
        assert shown == [c["id"] for c in call("GET", f"{base}{API}?limit=100")[1]["conversations"]]
        assert page.locator("#more-conversations").is_hidden()
        clean(seen)
        page.context.close()  # before this Gunicorn stops


def test_every_control_has_a_name_and_keyboard_focus_shows(visit, server):
    seen = open_playground(visit, server)
    page = seen.page
    nameless = page.evaluate("""() => [...document.querySelectorAll("button, input, select, textarea, summary, a")]
        .filter((control) => control.getClientRects().length || control.type === "file")
        .filter((control) => !(control.labels?.length || control.getAttribute("aria-label")
                               || control.getAttribute("aria-labelledby") || control.textContent.trim()))
        .map((control) => control.outerHTML)""")
    assert nameless == []
    assert page.evaluate("() => document.activeElement.id") == "composer-text"  # ready to type
    focused = []
    for key in ["Tab", "Tab", "Shift+Tab", "Shift+Tab", "Shift+Tab"]:
        page.keyboard.press(key)
        focused.append(page.evaluate("() => document.activeElement.id || document.activeElement.textContent"))
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), focused[-1]
    assert focused[:2] == ["attach", "send"]
    clean(seen)


def slow_reply(words: int, delay_s: float = 0.05) -> Reply:
    return Reply(parts=[f"word{n} " for n in range(words)], chunk_delay_s=delay_s)


def live_text(page) -> str:
    return page.locator(".message.model[data-status=streaming] .text").inner_text()


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_a_reply(visit, server, fake, how):
    fake.push(slow_reply(400))
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Count slowly.")
    page.wait_for_selector(".message.model[data-status=streaming] .text >> text=word3")
    if how == "button":
        page.get_by_role("button", name="Stop").click()
    else:
        page.keyboard.press("Escape")
    wait_idle(page)
    reply = page.locator(".message.model")
    assert reply.get_attribute("data-status") == "stopped"
    assert reply.locator(".status").inner_text() == "stopped"
    stored = conversation(server, current_id(page))["messages"][1]
    assert stored["status"] == "stopped" and stored["text"].startswith("word0 word1 word2 word3")
    assert "word399" not in stored["text"]
    assert reply.locator(".text").inner_text() == stored["text"].strip()
    assert any(url.endswith(f"/messages/{stored['id']}/stop") for url in seen.requests)
    # The conversation takes the next message at once.
    send(page, "Thanks.")
    page.wait_for_selector(".message.model >> nth=1")
    wait_idle(page)
    assert page.locator(".message.model").nth(1).locator(".text").inner_text() == "Echo: Thanks."
    clean(seen)


def test_a_reload_mid_answer_follows_the_rest(visit, server, fake):
    fake.push(slow_reply(60))
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Count for me.")
    page.wait_for_selector(".message.model[data-status=streaming] .text >> text=word5")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    # What was stored shows at once, and the rest follows from where it ended.
    assert page.locator(".message.model").get_attribute("data-status") == "streaming"
    assert live_text(page).startswith("word0 word1")
    assert page.locator("#stop").is_visible()
    wait_idle(page)
    stored = conversation(server, current_id(page))["messages"][1]
    assert stored["status"] == "complete" and stored["text"] == "".join(f"word{n} " for n in range(60))
    assert page.locator(".message.model .text").inner_text() == stored["text"].strip()
    follows = [url for url in seen.requests if url.endswith(f"/messages/{stored['id']}/events")]
    assert len(follows) == 1
    clean(seen)


def test_a_reload_mid_answer_shows_every_word_once(visit, server, fake):
    """What the page shows while it follows is the stored text plus the events after it: no gap, no repeat."""
    fake.push(slow_reply(40, 0.08))
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Count again.")
    page.wait_for_selector(".message.model[data-status=streaming] .text >> text=word4")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(".message.model[data-status=streaming] .text >> text=word20")
    shown = live_text(page).split()
    assert shown == [f"word{n}" for n in range(len(shown))]
    wait_idle(page)
    clean(seen)


def test_switching_conversations_while_a_reply_is_written(visit, server, fake):
    other = call("POST", f"{server}{API}", {"title": "Somewhere else"})[1]["id"]
    fake.push(Reply(parts=[f"word{n} " for n in range(30)], chunk_delay_s=0.05))
    seen = open_playground(visit, server)
    page = seen.page
    send(page, "Count.")
    page.wait_for_selector(".message.model[data-status=streaming] .text >> text=word2")
    first = current_id(page)
    page.locator(f"#conversations a[data-id='{other}']").click()
    page.wait_for_selector("#conversation-title >> text=Somewhere else")
    assert page.locator(".message").count() == 0 and page.locator("#send").is_visible()
    page.wait_for_timeout(300)  # the first reply's stream has closed by now: nothing of it comes here
    assert page.inner_text("#conversation-title") == "Somewhere else" and page.locator(".message").count() == 0
    page.go_back()
    page.wait_for_function(f"() => location.hash === '#/c/{first}'")
    page.wait_for_selector(".message.model .text >> text=word29", timeout=15000)
    clean(seen)


def _conversation_with(base, title, text):
    status, created = call("POST", f"{base}{API}", {"title": title})
    assert status == 201
    assert call("POST", f"{base}{API}/{created['id']}/messages", {"text": text})[0] == 201
    return created["id"]


def test_search_the_conversations(visit, server, fake, offered):
    need(offered, SEARCH)
    kyoto = _conversation_with(server, "Trip one", "Which temples in Kyoto open early?")
    osaka = _conversation_with(server, "Trip two", "Where to eat okonomiyaki in Osaka?")
    seen = open_playground(visit, server)
    page = seen.page
    page.get_by_label("Search conversations").fill("KYOTO temples")
    page.wait_for_function("() => document.querySelectorAll('#conversations a').length === 1")
    hit = page.locator("#conversations a")
    assert hit.get_attribute("data-id") == kyoto
    assert "temples in Kyoto" in hit.locator(".snippet").inner_text()
    page.get_by_label("Search conversations").fill("okonomiyaki")
    page.wait_for_selector(f"#conversations a[data-id='{osaka}']")
    assert page.locator("#conversations a").count() == 1
    page.get_by_label("Search conversations").fill("no such words anywhere")
    page.wait_for_selector("#list-status >> text=Nothing found.")
    page.get_by_label("Search conversations").fill("")
    page.wait_for_selector(f"#conversations a[data-id='{kyoto}']")
    assert page.locator(f"#conversations a[data-id='{osaka}']").count() == 1
    assert any("q=KYOTO+temples" in url for url in seen.requests)
    clean(seen)


def test_export_as_markdown_and_json(visit, server, fake, offered):
    need(offered, EXPORT)
    conversation_id = _conversation_with(server, "Exported", "Pack for Hokkaido in winter?")
    seen = visit(f"{server}/#/c/{conversation_id}")
    page = seen.page
    page.wait_for_selector("body[data-ready=true]")
    page.locator("#conversation-actions > summary").click()
    with page.expect_download() as markdown:
        page.get_by_role("button", name="Export Markdown").click()
    text = Path(markdown.value.path()).read_text()
    assert markdown.value.suggested_filename.endswith(".md")
    assert "Pack for Hokkaido in winter?" in text and "Echo: Pack for Hokkaido in winter?" in text
    page.locator("#conversation-actions > summary").click()
    with page.expect_download() as exported:
        page.get_by_role("button", name="Export JSON").click()
    assert exported.value.suggested_filename.endswith(".json")
    document = json.loads(Path(exported.value.path()).read_text())
    assert "Echo: Pack for Hokkaido in winter?" in json.dumps(document)
    clean(seen)


def test_pin_and_archive(visit, server, fake, offered):
    need(offered, PINNED, ARCHIVED)
    conversation_id = _conversation_with(server, "Keep handy", "Remember my seat: 14C.")
    seen = visit(f"{server}/#/c/{conversation_id}")
    page = seen.page
    page.wait_for_selector("body[data-ready=true]")
    item = page.locator(f"#conversations a[data-id='{conversation_id}']")
    page.locator("#conversation-actions > summary").click()
    page.get_by_role("button", name="Pin", exact=True).click()
    item.locator(".pin").wait_for()
    assert conversation(server, conversation_id)["pinned"] is True
    page.get_by_label("Which conversations").select_option("pinned")
    page.wait_for_function("() => document.querySelectorAll('#conversations a').length === 1")
    assert item.count() == 1

    page.locator("#conversation-actions > summary").click()
    page.get_by_role("button", name="Archive", exact=True).click()
    page.get_by_label("Which conversations").select_option("")
    item.wait_for(state="detached")
    assert conversation(server, conversation_id)["archived"] is True
    page.get_by_label("Which conversations").select_option("archived")
    item.wait_for()
    page.locator("#conversation-actions > summary").click()
    assert page.get_by_role("button", name="Unarchive").is_visible()
    clean(seen)
