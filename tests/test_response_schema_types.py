"""A response schema's keywords take values of one JSON type each (as Gemini's Schema declares them).

A value of another type is refused with 422 naming its dotted path, when the
conversation is created; whatever is accepted there must also go through the
SDK when a message is sent (no 502 on every turn).
"""
from __future__ import annotations

import pytest

from tests.test_hostile_input import envelope

API = "/api/v1/conversations"
STRING = {"type": "string"}
ARRAY = {"type": "array", "items": {"type": "string"}}
OBJECT = {"type": "object", "properties": {"a": {"type": "string"}}}
NUMBER = {"type": "number"}

# Each keyword on a schema it belongs to.
KEYWORDS = {
    "format": STRING, "title": STRING, "description": STRING, "pattern": STRING, "nullable": STRING,
    "default": STRING, "example": STRING, "minLength": STRING, "maxLength": STRING, "min_length": STRING,
    "max_length": STRING, "minItems": ARRAY, "maxItems": ARRAY, "min_items": ARRAY, "max_items": ARRAY,
    "propertyOrdering": OBJECT, "property_ordering": OBJECT, "minProperties": OBJECT, "maxProperties": OBJECT,
    "min_properties": OBJECT, "max_properties": OBJECT, "minimum": NUMBER, "maximum": NUMBER,
}
VALUES = [5, 0, -1, 1.5, 2.0, 2 ** 62, 2 ** 63, 1e300, "ab", "", ["a"], [1], [], {}, {"a": 1}, True, False, None]


def settings_with(schema: dict) -> dict:
    return {"response_mime_type": "application/json", "response_schema": schema}


@pytest.mark.parametrize("keyword, value", [
    ("format", 5), ("title", 5), ("description", {"a": 1}), ("pattern", 5), ("propertyOrdering", "ab"),
    ("maxLength", 1.5), ("minItems", 2.5), ("minLength", -1), ("maxItems", True), ("minimum", "1"),
    ("maximum", False), ("nullable", "yes"), ("property_ordering", [1]), ("min_length", 2 ** 63)])
def test_a_keyword_of_the_wrong_type_is_422_naming_its_path(client, keyword, value):
    body = {"id": "shaped", "settings": settings_with({**KEYWORDS[keyword], keyword: value})}
    error = envelope(client.post(API, json=body), 422)
    assert f"settings.response_schema.{keyword}" in error["details"], error
    assert client.get(f"{API}/shaped").status_code == 404


def test_the_path_of_a_nested_keyword_is_named(client):
    schema = {"type": "object", "properties": {"trip": {"type": "array", "items": {"type": "string", "title": 5}}}}
    error = envelope(client.post(API, json={"settings": settings_with(schema)}), 422)
    assert list(error["details"]) == ["settings.response_schema.properties.trip.items.title"]
    error = envelope(client.post(API, json={"settings": settings_with({"anyOf": [STRING, {**NUMBER,
                                                                                       "minimum": "0"}]})}), 422)
    assert list(error["details"]) == ["settings.response_schema.anyOf.1.minimum"]


def test_a_wrong_type_is_refused_on_a_send_too(chat):
    chat.post(API, json={"id": "trip"})
    error = envelope(chat.post(f"{API}/trip/messages", json={
        "text": "hi", "settings": settings_with({**STRING, "pattern": 5})}), 422)
    assert "settings.response_schema.pattern" in error["details"]
    assert chat.get(f"{API}/trip").json["messages"] == []


def test_every_schema_accepted_is_one_the_sdk_sends(chat):
    """Each keyword with values of every JSON type: refused at once, or a send that works."""
    wrong = []
    for n, (keyword, value) in enumerate((k, v) for k in KEYWORDS for v in VALUES):
        created = chat.post(API, json={"id": f"c{n}", "settings": settings_with({**KEYWORDS[keyword],
                                                                                  keyword: value})})
        if created.status_code == 422:
            if f"settings.response_schema.{keyword}" not in created.json["error"]["details"]:
                wrong.append((keyword, value, "422 not naming the keyword", created.json["error"]))
            continue
        sent = chat.post(f"{API}/c{n}/messages", json={"text": "hi"})
        if created.status_code != 201 or sent.status_code != 201:
            wrong.append((keyword, value, created.status_code, sent.get_data(as_text=True)[:200]))
    assert not wrong, wrong
