"""The faster type check in google-genai's models warns and answers as the SDK's own.

Case by case against the SDK's function as it shipped, then whole requests and the
recorded real responses through the real SDK, once with each check.
"""
import json
import logging
from pathlib import Path

import pydantic
from google import genai
from google.genai import types

from apsara.gemini import type_check
from tests.sdk_parts import every_part_kind

RECORDED = Path(__file__).parent / "fixtures" / "real-gemini"
SDK_LOGGER = "google_genai._common"


def test_installed_over_the_sdk_function_it_was_written_for():
    # An upgrade of google-genai that changes its check fails here: read the new one,
    # carry the change over, and update REPLACES.
    assert type_check.install()
    assert type_check.replaces_sdk_function()
    assert type_check.SDK_CHECK.__code__ is type_check.check_field_type_mismatches.__code__
    assert types.Part.__pydantic_decorators__.model_validators["_check_field_type_mismatches"].func.__func__ \
        is type_check.SDK_CHECK


class Plain(pydantic.BaseModel):  # not one of the SDK's models
    a: int = 1


def _cases():
    part, content = types.Part(text="hi"), types.Content(role="user", parts=[types.Part(text="hi")])
    return [
        (types.Part, {"text": "x"}), (types.Part, {}), (types.Part, {"text": None}),
        (types.Part, {"inline_data": types.Blob(data=b"x", mime_type="image/png")}),  # the right class
        (types.Part, {"inline_data": types.FileData(file_uri="u")}),  # a model of the wrong class
        (types.Part, {"inline_data": Plain()}), (types.Part, {"inlineData": types.FileData(file_uri="u")}),
        (types.Part, {"unknown": types.FileData(file_uri="u"), "text": "x"}),
        (types.Content, {"role": "user", "parts": [part]}), (types.Content, content), (types.Part, content),
        (types.Content, part), (types.Part, types.Part.model_construct(inline_data=types.FileData(file_uri="u"))),
        (types.GenerateContentConfig, {"thinking_config": types.HttpOptions()}),
        (types.GenerateContentConfig, {"thinking_config": {"thinking_budget": 5}, "temperature": 0.1}),
        (types.GenerateContentConfig, types.GenerateContentConfig(temperature=0.2)),
        (types.Part, "text"), (types.Part, None), (types.Part, [part]), (types.Part, 3),
    ]


def _run(check, cases, caplog) -> list[tuple]:
    seen = []
    for cls, data in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=SDK_LOGGER):
            answer = check(cls, data)
        seen.append((answer is data, [r.getMessage() for r in caplog.records if r.name == SDK_LOGGER]))
    return seen


def test_the_same_warnings_and_answers_as_the_sdk(caplog):
    cases = _cases()
    expected = _run(type_check.sdk_original(), cases, caplog)
    assert type_check.install()
    # The SDK's function as it now runs: Apsara's code with the SDK module's globals.
    assert _run(type_check.SDK_CHECK, cases, caplog) == expected
    warned = [messages for _, messages in expected if messages]
    assert len(warned) >= 4, "the cases must include models of the wrong class"
    assert all(same for same, _ in expected)


def test_a_model_of_the_wrong_class_still_warns_through_pydantic(caplog):
    assert type_check.install()
    with caplog.at_level(logging.WARNING, logger=SDK_LOGGER):  # then read by attributes, as the SDK does
        types.GenerateContentConfig.model_validate({"thinking_config": types.HttpOptions()})
    assert "Type mismatch in GenerateContentConfig.thinking_config" in caplog.text


def _sent(fake, send) -> list[dict]:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"))
    start = len(fake.requests)
    send(client)
    return [r["json"] for r in fake.requests[start:]]


def test_the_same_request_bytes_with_either_check(fake):
    contents = every_part_kind()
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.3,
                                         thinking_config=types.ThinkingConfig(thinking_budget=64))
    fake.files["files/a1"] = {"bytes": b"%PDF-1.4", "mime_type": "application/pdf", "expired": False}

    def send(client):
        client.models.generate_content(model="gemini-2.5-flash", contents=contents, config=config)
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=contents, config=config))

    type_check.uninstall()
    try:
        stock = _sent(fake, send)
    finally:
        type_check.install()
    assert stock and _sent(fake, send) == stock


def _recorded_responses() -> dict[str, list]:
    found = {}
    for path in sorted(RECORDED.glob("*.json")):
        response = json.loads(path.read_text()).get("response") or {}
        chunks = response.get("sse_events") or ([response["body"]] if isinstance(response.get("body"), dict) else [])
        chunks = [c for c in chunks if isinstance(c, dict) and "candidates" in c]
        if chunks:
            found[path.name] = chunks
    return found


def test_the_recorded_real_responses_read_the_same():
    recorded = _recorded_responses()
    assert recorded, "no recorded responses found"

    def read_all():
        return {name: [types.GenerateContentResponse._from_response(response=json.loads(json.dumps(chunk)),
                                                                     kwargs={}).model_dump()
                       for chunk in chunks] for name, chunks in recorded.items()}

    type_check.uninstall()
    try:
        stock = read_all()
    finally:
        type_check.install()
    assert read_all() == stock
