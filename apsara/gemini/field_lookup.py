"""A faster field lookup for google-genai's request converters.

Before a request goes out, the SDK turns it into the wire dict field by field with
`_common.get_value_by_path` (imported as `getv` by each converter module). On a
pydantic model that function first asks `key in model`, which pydantic answers by
building the list of every field's (name, value) pair and comparing each with the key,
never a match, and only then reads the attribute. A Part has a dozen fields and is
looked up ~20 times, so on a 1,000-message history half of the SDK's ~140 ms of CPU
for building the request went there (google-genai 3.3.0). Every long conversation's
every turn paid it.

`get_value_by_path` below is the SDK's function with that one step going straight to
the attribute, for the models where `key in model` can only be false (the SDK's own,
which define no `__contains__` and keep pydantic's `__iter__`); and a path of one field
of such a model, the converters' usual question, is answered before the walk begins
(another tenth of the request's CPU). The same answer for every input (tests hold it
to the original on odd paths and real requests). It is installed only over the exact
function it was written against: when an upgrade changes the SDK's, the SDK keeps its
own and a test says so.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

import pydantic
from google.genai import _common

from .sdk_source import is_source

log = logging.getLogger("apsara.gemini")

# The SDK's function this one replaces, by the sha256 of its source.
REPLACES = "8d77b2f6273881f53e236f356734cb17c59d0ad5fd6f0d4353aa294e2a5f9737"
# The SDK's modules that bind the function as `getv` when imported.
CONVERTERS = ("_transformers", "_live_converters", "_operations_converters", "_tokens_converters", "batches",
              "caches", "documents", "file_search_stores", "files", "live", "models", "operations", "tunings")

ORIGINAL = _common.get_value_by_path


class _NeverContains(dict):
    """Per type: asking each time cost more than the walk saved."""

    def __missing__(self, kind: type) -> bool:
        """A model of the SDK's, for which `key in data` compares the key with (name, value) pairs."""
        answer = (issubclass(kind, _common.BaseModel) and kind.__iter__ is pydantic.BaseModel.__iter__
                  and not hasattr(kind, "__contains__"))
        self[kind] = answer
        return answer


_NEVER_CONTAINS = _NeverContains()


def get_value_by_path(data: Any, keys: list[str], *, default_value: Any = None) -> Any:
    if keys == ["_self"]:
        return data
    if len(keys) == 1 and data and _NEVER_CONTAINS[type(data)]:  # the converters' usual question
        # "x[]" and "x[0]" too: the SDK's `"x" in data` is false on these models, and no
        # attribute has such a name, so both answer the default.
        return getattr(data, keys[0], default_value)
    for i, key in enumerate(keys):
        if not data:
            return default_value
        if key.endswith("[]"):
            key_name = key[:-2]
            if key_name in data:
                return [get_value_by_path(d, keys[i + 1:], default_value=default_value) for d in data[key_name]]
            return default_value
        if key.endswith("[0]"):
            key_name = key[:-3]
            if key_name in data and data[key_name]:
                return get_value_by_path(data[key_name][0], keys[i + 1:], default_value=default_value)
            return default_value
        if _NEVER_CONTAINS[type(data)]:  # the change: no walk over every field first
            if not hasattr(data, key):
                return default_value
            data = getattr(data, key)
        elif key in data:
            data = data[key]
        else:
            return default_value
    return data


def replaces_sdk_function() -> bool:
    return is_source(ORIGINAL, REPLACES)


def install() -> bool:
    """Put the faster lookup in the SDK's converters, once per process. False: the SDK's
    function is not the one this was written against, and stays."""
    if _common.get_value_by_path is get_value_by_path:
        return True
    if not replaces_sdk_function():
        log.info("google-genai's get_value_by_path changed: its request converters keep their own")
        return False
    for name in CONVERTERS:
        module = importlib.import_module(f"google.genai.{name}")
        if getattr(module, "getv", None) is ORIGINAL:
            module.getv = get_value_by_path
    _common.get_value_by_path = get_value_by_path
    return True
