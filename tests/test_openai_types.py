"""/v1/chat/completions with a value of the wrong JSON type anywhere in the body: 400 in OpenAI's shape.

A body that uses every field this server reads is sent as is (200), then once
for each place in it with each JSON type there instead: never a 5xx, and a
refusal is OpenAI's error object naming the parameter.
"""
from __future__ import annotations

import base64
import copy
import json

import pytest

URL = "/v1/chat/completions"
MODEL = "gemini-2.5-flash"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00" \
      b"\x02\x00\x10\x00data\x00\x00\x00\x00"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


FUNCTION = {"type": "function", "function": {"name": "f"}}
EVERY_FIELD = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Speak French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
            {"type": "input_audio", "input_audio": {"format": "wav", "data": b64(WAV)}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{b64(PDF)}"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"ok\": true}"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "A function.",
                                                "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [FUNCTION]}},
    "temperature": 1, "top_p": 0.5, "top_k": 5, "seed": 1, "max_tokens": 100, "max_completion_tokens": 100,
    "stop": ["zzz"], "reasoning_effort": "low", "n": 1,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stream": False,
}
# The fields the first body leaves out, or that go only with a stream.
STREAMED = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"},
                 {"role": "assistant", "content": [{"type": "text", "text": "Yes?"}, {"type": "refusal",
                                                                                      "refusal": "No."}]},
                 {"role": "user", "content": "hi again"}],
    "tools": [FUNCTION], "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_object"}, "modalities": ["text"],
    "stream": True, "stream_options": {"include_usage": True},
}
WRONG_TYPES = [None, True, 0, -1, 1.5, 2 ** 64, "", "x", [], [None], ["x"], [{}], {}, {"a": None}]


def places(value, path=()):
    """Every place in a JSON value, as a path of keys and indexes."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield path + (key,)
        yield from places(child, path + (key,))


def with_value(body: dict, path: tuple, value) -> dict:
    changed = copy.deepcopy(body)
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return changed


def post(chat, body):
    return chat.post(URL, data=json.dumps(body), content_type="application/json")


def openai_refusal(response) -> dict:
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("body", [EVERY_FIELD, STREAMED], ids=["every_field", "streamed"])
def test_the_body_with_every_field_is_answered(chat, body):
    response = post(chat, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "error" not in response.get_data(as_text=True)


@pytest.mark.parametrize("body", [EVERY_FIELD, STREAMED], ids=["every_field", "streamed"])
def test_any_type_anywhere_is_answered_or_refused_naming_the_parameter(chat, body):
    wrong = []
    for path in places(body):
        for value in WRONG_TYPES:
            response = post(chat, with_value(body, path, value))
            text = response.get_data(as_text=True)  # a stream runs to its end
            if response.status_code == 200:
                if '"server_error"' in text:  # a stream that failed after its 200
                    wrong.append((path, value, 200, text[-200:]))
                continue
            error = response.json.get("error") if response.is_json else None
            # 404 is OpenAI's answer to a model it does not have (a string, just not a model id).
            if response.status_code not in (400, 404) or not isinstance(error, dict) or not error.get("param"):
                wrong.append((path, value, response.status_code, text[:200]))
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("audio, param", [
    ({"format": ["wav"], "data": b64(WAV)}, "messages[0].content[0].input_audio.format"),
    ({"format": {"wav": 1}, "data": b64(WAV)}, "messages[0].content[0].input_audio.format"),
    ({"format": "wav", "data": ["x"]}, "messages[0].content[0].input_audio.data"),
])
def test_input_audio_of_the_wrong_type_is_400(chat, audio, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}]}
    response = post(chat, body)
    assert response.status_code == 400 and openai_refusal(response)["param"] == param


@pytest.mark.parametrize("allowed, param", [
    ({"mode": "auto", "tools": 5}, "tool_choice.allowed_tools.tools"),
    ({"mode": "auto", "tools": []}, "tool_choice.allowed_tools.tools"),
    ({"mode": "auto", "tools": [{"function": "f"}]}, "tool_choice.allowed_tools.tools[0]"),
    ({"mode": "auto", "tools": [FUNCTION, {"type": "function", "function": {"name": "g"}}]},
     "tool_choice.allowed_tools.tools[1]"),
    ({"mode": ["auto"], "tools": [FUNCTION]}, "tool_choice.allowed_tools.mode"),
])
def test_allowed_tools_of_the_wrong_shape_are_400(chat, allowed, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [FUNCTION],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": allowed}}
    response = post(chat, body)
    assert response.status_code == 400 and openai_refusal(response)["param"] == param
