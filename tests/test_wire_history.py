"""A request's history handed to the SDK already as Gemini's JSON sends the same bytes.

Each request is sent through the real SDK to the fake twice: as the SDK builds it from
the contents, and with the history as wire.request hands it over (then once more, from
what the contents kept). The bodies the fake received must be identical.
"""
import base64
import json
from pathlib import Path

import pytest
from google import genai
from google.genai import types

from apsara.gemini.catalog import ModelInfo
from apsara.gemini.convert import generation_config, to_contents
from apsara.gemini.requests import BUILT_IN
from apsara.gemini import wire
from apsara.gemini.wire import ContentDict
from tests.sdk_parts import every_part_kind

RECORDED = Path(__file__).parent / "fixtures" / "real-gemini"


def _client(fake) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"))


def _sent(fake, send) -> list[dict]:
    start = len(fake.requests)
    send()
    return [r["json"] for r in fake.requests[start:]]


def _stock_and_ours(fake, model: str, contents, config) -> tuple[list, list, list]:
    client = _client(fake)

    def both(contents, config):
        client.models.generate_content(model=model, contents=contents, config=config)
        list(client.models.generate_content_stream(model=model, contents=contents, config=config))

    stock = _sent(fake, lambda: both(contents, config))
    ours = _sent(fake, lambda: both(*wire.request(contents, config)))
    again = _sent(fake, lambda: both(*wire.request(contents, config)))  # from what it kept
    assert len(stock) == 2
    return stock, ours, again


def test_every_part_kind_and_setting(fake):
    model = ModelInfo(id="gemini-2.5-flash", display_name="Flash", thinking=("budget",))
    settings = {"temperature": 0.2, "max_output_tokens": 99, "stop_sequences": ["END"], "seed": 7,
                "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
                "include_thoughts": True, "thinking_budget": 128}
    declarations = [{"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    tools = [make() for make in BUILT_IN.values()] + [types.Tool(function_declarations=declarations)]
    config = generation_config(model, settings, "Be brief.", tools, response_modalities=["TEXT", "IMAGE"])
    fake.files["files/a1"] = {"bytes": b"%PDF-1.4", "mime_type": "application/pdf", "expired": False}
    contents = every_part_kind()

    stock, ours, again = _stock_and_ours(fake, model.id, contents, config)
    assert ours == stock and again == stock
    assert stock[0]["contents"][1]["parts"][0]["thoughtSignature"]  # bytes, base64 on the wire
    assert stock[0]["contents"][0]["parts"][1]["inlineData"]["data"]
    assert stock[0]["systemInstruction"] and stock[0]["tools"]


def test_a_long_history_without_a_config_and_with_the_calls_own_options(fake):
    turns = [("user" if n % 2 == 0 else "model", [{"type": "text", "text": f"message {n} ✓"}]) for n in range(41)]
    contents = to_contents(turns)
    options = types.GenerateContentConfig(temperature=0.0, http_options=types.HttpOptions(
        timeout=5000, retry_options=types.HttpRetryOptions(attempts=1)))
    stock, ours, again = _stock_and_ours(fake, "gemini-2.5-flash", contents, options)
    assert ours == stock and again == stock
    assert len(stock[0]["contents"]) == 41
    # A request without a config of its own is given one to carry the history: an empty
    # generationConfig (Gemini's defaults, as without it) is all that differs.
    stock, ours, again = _stock_and_ours(fake, "gemini-2.5-flash", contents, None)
    assert [b.pop("generationConfig") for b in ours + again] == [{}] * 4
    assert ours == stock and again == stock


def _recorded_contents() -> dict[str, list]:
    bodies = {p.name: json.loads(p.read_text())["request"].get("body") for p in sorted(RECORDED.glob("*.json"))}
    return {name: body["contents"] for name, body in bodies.items() if body and "contents" in body}


@pytest.mark.parametrize("contents", _recorded_contents().values(), ids=_recorded_contents().keys())
def test_the_recorded_real_requests(fake, contents):
    """What other projects sent to the live API, sent again both ways."""
    contents = [ContentDict(content) for content in contents]  # kept, as a conversation's are
    stock, ours, again = _stock_and_ours(fake, "gemini-2.5-flash", contents, types.GenerateContentConfig())
    assert ours == stock and again == stock
    assert ours[0]["contents"] == contents


def test_each_message_is_converted_once_but_a_files_bytes_are_not_kept():
    text = ContentDict(role="user", parts=[{"text": "hello"}])
    picture = ContentDict(role="user", parts=[{"inline_data": {"mime_type": "image/png",
                                                              "data": base64.b64encode(b"\x89PNG").decode()}}])
    assert wire.json_of(text) is wire.json_of(text)
    assert wire.json_of(picture) == wire.json_of(picture)
    assert wire.json_of(picture) is not wire.json_of(picture)  # made again each time: up to 15 MB
    plain = {"role": "user", "parts": [{"text": "hello"}]}  # not one of ours: nowhere to keep it
    assert wire.json_of(plain) == wire.json_of(text) and wire.json_of(plain) is not wire.json_of(plain)


def test_what_a_conversation_sends_is_kept_with_its_contents_and_goes_with_them():
    turns = [("user" if n % 2 == 0 else "model", [{"type": "text", "text": f"m{n}"}]) for n in range(5)]
    contents = to_contents(turns)
    assert all(type(content) is ContentDict for content in contents)
    wire.request(contents, types.GenerateContentConfig())
    assert [content.sent_as["parts"][0]["text"] for content in contents] == [f"m{n}" for n in range(5)]
    assert to_contents(turns)[0] is not contents[0]  # made afresh: nothing kept anywhere else


def test_anything_but_content_dicts_goes_to_the_sdk_as_it_came():
    config = types.GenerateContentConfig(temperature=0.1)
    for contents in ("a prompt", [], [{"text": "a part"}], [types.Content(role="user", parts=[types.Part(text="x")])]):
        assert wire.request(contents, config) == (contents, config)


def test_a_config_given_as_a_dict(fake):
    contents = to_contents([("user", [{"type": "text", "text": "hi"}])])
    stock, ours, again = _stock_and_ours(fake, "gemini-2.5-flash", contents, {"temperature": 0.3})
    assert ours == stock and again == stock and stock[0]["generationConfig"] == {"temperature": 0.3}


def test_a_bad_message_fails_as_the_sdk_fails_it(fake):
    bad = [{"role": "user", "parts": [{"text": 3}]}]
    with pytest.raises(Exception) as stock:
        _client(fake).models.generate_content(model="gemini-2.5-flash", contents=bad)
    with pytest.raises(type(stock.value)):
        wire.request(bad, None)
    assert not fake.requests


def test_the_sdks_own_function_calling_is_off_unless_the_caller_set_it():
    """Its loop deep-copied the config, the whole history in it, on every call."""
    contents = to_contents([("user", [{"type": "text", "text": "hi"}])])
    assert wire.request(contents, types.GenerateContentConfig())[1].automatic_function_calling.disable
    # A caller who asked for the SDK's loop gets the SDK's own way: the loop sends what it adds.
    asked = types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(
        maximum_remote_calls=3))
    assert wire.request(contents, asked) == (contents, asked)
    off = types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    assert wire.request(contents, off)[0] is wire.PLACEHOLDER
