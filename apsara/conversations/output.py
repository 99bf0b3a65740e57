"""Structured output and safety settings: checked here, before anything reaches Gemini.

`response_schema` is Gemini's OpenAPI-style schema subset; a malformed one is
refused with the dotted path of the problem (`settings.response_schema.properties.age.type`).
"""
from __future__ import annotations

import math

from ..errors import ApiError

SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "properties", "required", "items",
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "anyOf",
    "propertyOrdering", "default", "example", "minProperties", "maxProperties",
    "min_items", "max_items", "min_length", "max_length", "any_of", "property_ordering",
    "min_properties", "max_properties",
}
MAX_DEPTH = 32


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_count(value) -> bool:
    # Gemini's Schema takes these as int64 (the SDK turns a whole 3.0 into 3); a bool is an
    # int to Python, not to JSON.
    whole = type(value) is int or (type(value) is float and value.is_integer())
    return whole and 0 <= value < 2 ** 63


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))  # 1e999 reads as inf; a 400-digit int will not fit a float
    except OverflowError:
        return False


def _is_bool(value) -> bool:
    return isinstance(value, bool)


_TEXT = (_is_text, "must be a string")
_TEXTS = (_is_texts, "must be a list of strings")
_COUNT = (_is_count, f"must be a whole number from 0 to {2 ** 63 - 1}")
_NUMBER = (_is_number, "must be a number")
# The type of each plain value, as google-genai's types.Schema declares it: the SDK
# refuses anything else when a turn is sent, long after the schema was accepted.
# (type, enum, required, properties, items and anyOf are checked on their own below.)
_VALUE_TYPES = {
    "format": _TEXT, "title": _TEXT, "description": _TEXT, "pattern": _TEXT,
    "propertyOrdering": _TEXTS, "property_ordering": _TEXTS,
    "minItems": _COUNT, "maxItems": _COUNT, "minLength": _COUNT, "maxLength": _COUNT,
    "minProperties": _COUNT, "maxProperties": _COUNT, "min_items": _COUNT, "max_items": _COUNT,
    "min_length": _COUNT, "max_length": _COUNT, "min_properties": _COUNT, "max_properties": _COUNT,
    "minimum": _NUMBER, "maximum": _NUMBER,
    "nullable": (_is_bool, "must be true or false"),
}

SAFETY_CATEGORIES = ["HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
                     "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY"]
SAFETY_THRESHOLDS = ["BLOCK_NONE", "BLOCK_ONLY_HIGH", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_LOW_AND_ABOVE", "OFF",
                     "HARM_BLOCK_THRESHOLD_UNSPECIFIED"]
MIME_TYPES = ["text/plain", "application/json", "text/x.enum"]


def schema_problems(schema, path: str, depth: int = 0) -> list[tuple[str, str]]:
    """Every problem in a response schema, as (dotted path, message)."""
    if depth > MAX_DEPTH:
        return [(path, f"nested deeper than {MAX_DEPTH} levels")]
    if not isinstance(schema, dict):
        return [(path, "must be an object")]
    problems = [(f"{path}.{key}", "unknown schema keyword") for key in schema if key not in _KEYS]
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in SCHEMA_TYPES):
        problems.append((f"{path}.type", f"must be one of {', '.join(sorted(SCHEMA_TYPES))}"))
    if "type" not in schema and "anyOf" not in schema and "any_of" not in schema:
        problems.append((f"{path}.type", "a schema needs a type (or anyOf)"))
    kind = kind.lower() if isinstance(kind, str) else kind
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            problems.append((f"{path}.properties", "must be an object of schemas"))
        else:
            if kind not in (None, "object"):
                problems.append((f"{path}.properties", "only an object schema has properties"))
            for name, sub in properties.items():
                problems += schema_problems(sub, f"{path}.properties.{name}", depth + 1)
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            problems.append((f"{path}.required", "must be a list of property names"))
        elif isinstance(properties, dict):
            problems += [(f"{path}.required", f"'{r}' is not a property") for r in required if r not in properties]
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{path}.items", depth + 1)
    elif kind == "array":
        problems.append((f"{path}.items", "an array schema needs items"))
    for key in ("anyOf", "any_of"):
        if key in schema:
            options = schema[key]
            if not isinstance(options, list) or not options:
                problems.append((f"{path}.{key}", "must be a non-empty list of schemas"))
            else:
                for n, option in enumerate(options):
                    problems += schema_problems(option, f"{path}.{key}.{n}", depth + 1)
    enum = schema.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum or not all(isinstance(e, str) for e in enum)):
        problems.append((f"{path}.enum", "must be a non-empty list of strings"))
    problems += _value_problems(schema, path)
    return problems


def _value_problems(schema: dict, path: str) -> list[tuple[str, str]]:
    """Keywords whose value is of the wrong JSON type (a string where a number goes...)."""
    problems = []
    for key, value in schema.items():
        is_right, message = _VALUE_TYPES.get(key, (None, None))
        if is_right is not None and not is_right(value):
            problems.append((f"{path}.{key}", message))
    return problems


def check_output(settings: dict, field: str = "settings") -> None:
    """response_mime_type and response_schema must make sense together."""
    mime, schema = settings.get("response_mime_type"), settings.get("response_schema")
    if schema is not None:
        problems = schema_problems(schema, f"{field}.response_schema")
        if problems:
            details: dict[str, list[str]] = {}
            for path, message in problems:
                details.setdefault(path, []).append(message)
            first_path, first_message = problems[0]
            raise ApiError(422, f"invalid response_schema: {first_path}: {first_message}", details)
        if mime not in ("application/json", "text/x.enum"):
            message = "response_schema needs response_mime_type 'application/json' or 'text/x.enum'"
            raise ApiError(422, message, {f"{field}.response_mime_type": [message]})
    if mime == "text/x.enum" and not (isinstance(schema, dict) and schema.get("enum")):
        message = "response_mime_type 'text/x.enum' needs a response_schema with an enum"
        raise ApiError(422, message, {f"{field}.response_schema": [message]})
