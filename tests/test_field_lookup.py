"""The faster field lookup in google-genai's request converters sends the same bytes.

Each request is sent twice through the real SDK to the fake, once with the SDK's own
lookup and once with Apsara's; the bodies the fake received must be identical.
"""
import json
from pathlib import Path

import pydantic
import pytest
from google import genai
from google.genai import _common, models, types

from apsara.gemini import field_lookup
from apsara.gemini.catalog import ModelInfo
from apsara.gemini.convert import generation_config
from apsara.gemini.requests import BUILT_IN
from tests.sdk_parts import every_part_kind

RECORDED = Path(__file__).parent / "fixtures" / "real-gemini"


def test_installed_over_the_sdk_function_it_was_written_for():
    # An upgrade of google-genai that changes its function fails here: read the new one,
    # carry the change over, and update REPLACES.
    assert field_lookup.install()
    assert field_lookup.replaces_sdk_function()
    assert models.getv is field_lookup.get_value_by_path
    assert _common.get_value_by_path is field_lookup.get_value_by_path


def _with_lookup(monkeypatch, lookup):
    for name in field_lookup.CONVERTERS:
        module = __import__(f"google.genai.{name}", fromlist=["getv"])
        monkeypatch.setattr(module, "getv", lookup)
    monkeypatch.setattr(_common, "get_value_by_path", lookup)


def _bodies(monkeypatch, fake, send) -> list[dict]:
    """The request bodies the fake received for `send(client)`, with each lookup."""
    bodies = []
    for lookup in (field_lookup.ORIGINAL, field_lookup.get_value_by_path):
        _with_lookup(monkeypatch, lookup)
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"))
        start = len(fake.requests)
        send(client)
        bodies.append([r["json"] for r in fake.requests[start:]])
    assert bodies[0], "nothing was sent"
    return bodies


def test_a_request_with_every_part_kind_and_setting(monkeypatch, fake):
    model = ModelInfo(id="gemini-2.5-flash", display_name="Flash", thinking=("budget",))
    settings = {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "max_output_tokens": 99, "stop_sequences": ["END"],
                "seed": 7, "response_mime_type": "application/json",
                "response_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
                "include_thoughts": True, "thinking_budget": 128}
    declarations = [{"name": "weather", "description": "forecast",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}]
    tools = [make() for make in BUILT_IN.values()] + [types.Tool(function_declarations=declarations)]
    config = generation_config(model, settings, "Be brief.", tools, tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode="AUTO"), include_server_side_tool_invocations=True),
        response_modalities=["TEXT", "IMAGE"])
    contents = every_part_kind()
    fake.files["files/a1"] = {"bytes": b"%PDF-1.4", "mime_type": "application/pdf", "expired": False}

    def send(client):
        client.models.generate_content(model=model.id, contents=contents, config=config)
        list(client.models.generate_content_stream(model=model.id, contents=contents, config=config))
        client.models.count_tokens(model=model.id, contents=contents)

    stock, ours = _bodies(monkeypatch, fake, send)
    assert ours == stock
    first = stock[0]
    assert first["systemInstruction"] and first["tools"] and first["generationConfig"]["thinkingConfig"]
    assert first["contents"][1]["parts"][3]["thoughtSignature"]  # the converters did reach every field


def _recorded_generate_requests() -> dict[str, dict]:
    bodies = {p.name: json.loads(p.read_text())["request"].get("body") for p in sorted(RECORDED.glob("*.json"))}
    return {name: body for name, body in bodies.items() if body and "contents" in body}


@pytest.mark.parametrize("body", _recorded_generate_requests().values(), ids=_recorded_generate_requests().keys())
def test_the_recorded_real_requests(monkeypatch, fake, body):
    """What other projects sent to the live API, rebuilt as SDK arguments and sent again."""
    config = dict(body.get("generationConfig") or {})
    for key in ("systemInstruction", "tools", "toolConfig", "safetySettings", "cachedContent"):
        if key in body:
            config[key] = body[key]

    def send(client):  # a model the fake serves: the recorded ones' checks are not what is tested here
        client.models.generate_content(model="gemini-2.5-flash", contents=body["contents"],
                                       config=types.GenerateContentConfig.model_validate(config))

    stock, ours = _bodies(monkeypatch, fake, send)
    assert ours == stock
    assert ours[0]["contents"] == body["contents"]


class Plain(pydantic.BaseModel):  # not one of the SDK's models
    a: int = 1


class Mapping(_common.BaseModel):  # an SDK model that answers `in` and `[]` itself
    a: int = 1

    def __contains__(self, key):
        return key == "a"

    def __getitem__(self, key):
        return f"item {key}"


class Falsy(_common.BaseModel):
    a: int = 1

    def __bool__(self):
        return False


def test_the_lookup_answers_as_the_sdk_on_odd_paths(monkeypatch):
    part = types.Part(text="", thought=False)
    content = types.Content(role="user", parts=[part])
    cases = [
        ({}, ["a"]), ({"a": 0}, ["a"]), ({"a": None}, ["a"]), ({"a": {"b": [1]}}, ["a", "b"]),
        ({"a": [{"b": 1}, {"c": 2}]}, ["a[]", "b"]), ({"a": []}, ["a[0]", "b"]), ({"a": [{"b": 3}]}, ["a[0]", "b"]),
        (content, ["parts"]), (content, ["parts[]", "text"]), (content, ["parts[0]", "text"]),
        (content, ["missing"]), (content, ["role", "upper"]), (part, ["text"]), (part, ["thought"]),
        (part, ["inline_data", "data"]), (content, ["_self"]), (None, ["a"]), ({"a": content}, ["a", "role"]),
        ({"contents": [content]}, ["contents[]", "parts"]), (Plain(), ["a"]), ({"x": Plain()}, ["x", "a"]),
        (Mapping(), ["a"]), (Mapping(), ["b"]), (Falsy(), ["a"]), (part, ["text", "upper"]),
        (content, ["parts[]"]), (content, ["parts[0]"]), (part, ["_self"]), (Falsy(), ["_self"]),
    ]
    defaults = (None, "fallback")
    _with_lookup(monkeypatch, field_lookup.ORIGINAL)  # the SDK's own all the way down, for what it answers
    expected = [field_lookup.ORIGINAL(data, keys, default_value=d) for data, keys in cases for d in defaults]
    _with_lookup(monkeypatch, field_lookup.get_value_by_path)
    answers = [field_lookup.get_value_by_path(data, keys, default_value=d) for data, keys in cases for d in defaults]
    for case, answer, wanted in zip([(data, keys, d) for data, keys in cases for d in defaults], answers, expected):
        assert answer == wanted, case
