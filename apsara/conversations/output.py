"""Structured output and safety settings: checked here, before anything reaches Gemini.

`response_schema` is Gemini's OpenAPI-style schema subset; a malformed one is
refused with the dotted path of the problem (`settings.response_schema.properties.age.type`).
"""
from __future__ import annotations

from ..errors import ApiError

SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "properties", "required", "items",
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "anyOf",
    "propertyOrdering", "default", "example", "minProperties", "maxProperties",
    "min_items", "max_items", "min_length", "max_length", "any_of", "property_ordering",
    "min_properties", "max_properties",
}
_NUMBER_KEYS = {"minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "minProperties",
                "maxProperties", "min_items", "max_items", "min_length", "max_length", "min_properties",
                "max_properties"}
MAX_DEPTH = 32

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
    for key in _NUMBER_KEYS & schema.keys():
        if isinstance(schema[key], bool) or not isinstance(schema[key], (int, float)):
            problems.append((f"{path}.{key}", "must be a number"))
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        problems.append((f"{path}.nullable", "must be true or false"))
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
