"""The faster pruning of unknown answer fields keeps and drops what the SDK's own does.

Each answer is pruned twice, once by the SDK's function as it shipped and once by
Apsara's, on copies: recorded real answers, the same with unknown keys added at every
level, and odd ones; then answers read through the real SDK from the fake.
"""
import copy
import json
import sys
from pathlib import Path
from typing import Optional

import pydantic
import pytest
from google import genai
from google.genai import _common, types

from apsara.gemini import extra_fields

RECORDED = Path(__file__).parent / "fixtures" / "real-gemini"


def test_installed_over_the_sdk_function_it_was_written_for():
    # An upgrade of google-genai that changes its function fails here: read the new one,
    # carry the change over, and update REPLACES.
    assert extra_fields.install()
    assert extra_fields.replaces_sdk_function()
    assert _common._remove_extra_fields is extra_fields.remove_extra_fields


def _recorded() -> list[tuple[type, dict]]:
    """(model, answer) of every recorded answer the SDK reads."""
    found = []
    for path in sorted(RECORDED.glob("*.json")):
        response = json.loads(path.read_text()).get("response") or {}
        body = response.get("body")
        for chunk in response.get("sse_events") or ([body] if isinstance(body, dict) else []):
            if isinstance(chunk, dict) and ("candidates" in chunk or "promptFeedback" in chunk):
                found.append((types.GenerateContentResponse, chunk))
        if isinstance(body, dict) and "models" in body:
            found.extend((types.Model, model) for model in body["models"])
    return found


def _with_strangers(value, depth=0):
    """`value` with unknown keys at every level, and some known ones spelled as the SDK's own names."""
    if isinstance(value, list):
        return [_with_strangers(v, depth + 1) for v in value] + ["a string among dicts", 7]
    if not isinstance(value, dict):
        return value
    out = {key: _with_strangers(v, depth + 1) for key, v in value.items()}
    out["fieldFromTheFuture"] = {"nested": {"deeper": [1, {"x": 2}]}}
    out[f"level{depth}"] = [{"unknown": True}]
    if "finishReason" in out:
        out["finish_reason"] = out.pop("finishReason")  # the name instead of the alias
    return out


def _odd() -> list[tuple[type, dict]]:
    return [
        (types.GenerateContentResponse, {}),
        (types.GenerateContentResponse, {"candidates": "not a list", "usageMetadata": ["not", "a", "dict"]}),
        (types.GenerateContentResponse, {"candidates": [None, 3, {"content": {"parts": [{"text": "x", "y": 1}]}}]}),
        (types.GenerateContentResponse, {"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "f", "args": {"free": {"form": [1, {"json": True}]}}, "extra": 1}},
            {"functionResponse": {"name": "f", "response": {"kept": {"as": "is"}}}}]}}]}),
        (types.GenerateContentResponse, {"sdkHttpResponse": {"headers": {"a": "b"}, "new": 1}, "automaticFunctionCallingHistory": [
            {"role": "user", "parts": [{"text": "t", "z": 0}]}], "modelVersion": "m", "responseId": "r"}),
        (types.Candidate, {"groundingMetadata": {"groundingChunks": [{"web": {"uri": "u", "title": "t", "new": 1}}],
                                                 "searchEntryPoint": {"renderedContent": "<p>"}, "new": 2}}),
        (types.File, {"name": "files/a", "mimeType": "text/plain", "sizeBytes": "3", "unknown": {"x": 1}}),
    ]


CASES = _recorded() + [(model, _with_strangers(answer)) for model, answer in _recorded()] + _odd()


def test_the_recorded_answers_are_there():
    assert len(_recorded()) >= 15


@pytest.mark.parametrize("model,answer", CASES, ids=[f"{m.__name__}-{n}" for n, (m, _) in enumerate(CASES)])
def test_the_same_keys_kept_and_dropped_as_the_sdk(monkeypatch, model, answer):
    stock, ours = _both(monkeypatch, model, answer)
    assert ours == stock


class Inner(_common.BaseModel):
    value: Optional[int] = None


class Collide(_common.BaseModel):
    """One field's alias ("aB") is another field's name: the SDK takes the alias."""
    a_b: Optional[Inner] = None
    aB: Optional[list[Inner]] = pydantic.Field(default=None, alias="other")


class Early(_common.BaseModel):
    """A forward reference to a model defined only after the first answer is read."""
    later: Optional["DefinedLater"] = None  # noqa: F821 - set on this module by the test


def _both(monkeypatch, model, answer):
    """`answer` pruned by the SDK's function and by Apsara's; each recurses through the SDK
    module's name, so that name is each one's in turn."""
    stock, ours = copy.deepcopy(answer), copy.deepcopy(answer)
    monkeypatch.setattr(_common, "_remove_extra_fields", extra_fields.ORIGINAL)
    extra_fields.ORIGINAL(model, stock)
    monkeypatch.setattr(_common, "_remove_extra_fields", extra_fields.remove_extra_fields)
    extra_fields.remove_extra_fields(model, ours)
    return stock, ours


def test_an_alias_that_is_another_fields_name(monkeypatch):
    answer = {"aB": {"value": 1, "extra": 2}, "other": [{"value": 3, "extra": 4}], "a_b": {"extra": 5}}
    stock, ours = _both(monkeypatch, Collide, answer)
    assert ours == stock
    assert stock["aB"] == {"value": 1}  # walked as `a_b`, the field whose alias it is


def test_a_model_read_before_its_forward_reference_exists(monkeypatch):
    answer = {"later": {"value": 1, "extra": 2}, "unknown": 3}
    stock, ours = _both(monkeypatch, Early, answer)
    assert ours == stock == {"later": {"value": 1, "extra": 2}}  # nothing to walk it against yet

    class DefinedLater(_common.BaseModel):
        value: Optional[int] = None

    monkeypatch.setattr(sys.modules[__name__], "DefinedLater", DefinedLater, raising=False)
    stock, ours = _both(monkeypatch, Early, answer)
    assert ours == stock == {"later": {"value": 1}}  # built now: walked


def test_answers_read_through_the_sdk_are_the_same(monkeypatch, fake):
    def read_all():
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"))
        whole = client.models.generate_content(model="gemini-2.5-flash", contents="hello")
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello"))
        models = [m.name for m in client.models.list(config={"page_size": 100}).page]
        return [whole.model_dump()] + [c.model_dump() for c in chunks] + [models]

    monkeypatch.setattr(_common, "_remove_extra_fields", extra_fields.ORIGINAL)
    stock = _same_calls(read_all())
    monkeypatch.setattr(_common, "_remove_extra_fields", extra_fields.remove_extra_fields)
    assert _same_calls(read_all()) == stock and len(stock) > 3


def _same_calls(value):
    """What differs between two identical calls: the time in the headers, the fake's signature count."""
    if isinstance(value, list):
        return [_same_calls(v) for v in value]
    if isinstance(value, dict):
        return {k: "(set)" if k == "thought_signature" and v is not None else _same_calls(v)
                for k, v in value.items() if k != "sdk_http_response"}
    return value
