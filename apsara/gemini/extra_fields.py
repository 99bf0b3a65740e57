"""A faster pruning of the fields google-genai does not know in Gemini's answers.

Before the SDK validates an answer (every chunk of a stream), `_common._remove_extra_fields`
walks it against the answer's models and drops the keys they do not have, so that a field
Gemini adds one day does not break validation. For each key of each level it made the
model's whole alias map again and worked the field's type out again: two thirds of the
SDK's ~130 µs of CPU per streamed chunk (google-genai 3.3.0).

`remove_extra_fields` below makes the same decisions from a plan made once per model: which
keys it keeps (by name or alias), and for each the model to walk into when its value is a
dict, or its items' model when a list. The same keys are dropped and kept for every input
(tests hold it to the original on recorded answers and odd ones). A model not yet built
(pydantic builds the SDK's on first use) is planned each time until it is. It is installed
only over the exact function it was written against: when an upgrade changes the SDK's,
the SDK keeps its own and a test says so.
"""
from __future__ import annotations

import logging
import typing
from typing import Any, NamedTuple, Union

import pydantic
from google.genai import _common

from .sdk_source import is_source

log = logging.getLogger("apsara.gemini")

# The SDK's function this one replaces, by the sha256 of its source.
REPLACES = "93dfe844c64658f0d9a25399be28d9731f63ef7c5cf0b63578a54c0a21f42eb3"

ORIGINAL = _common._remove_extra_fields


class KeptKey(NamedTuple):
    model: type | None       # what a dict value is walked against (None: not walked)
    items: type | None       # what the dicts of a list value are walked against (None: not walked)


_PLANS: dict[type, dict[str, KeptKey]] = {}


def _plan(model) -> dict[str, KeptKey]:
    """The SDK's decisions for each key `model` keeps, as it makes them key by key."""
    plan: dict[str, KeptKey] = {}
    fields = model.model_fields
    names = {name: name for name in fields}
    names.update({info.alias: name for name, info in fields.items()})  # an alias wins, as in the SDK's
    for key, name in names.items():
        annotation = fields[name].annotation
        if typing.get_origin(annotation) is Union:
            annotation = typing.get_args(annotation)[0]
        items = None
        if not _common._is_struct_type(annotation):
            item_args = typing.get_args(annotation)
            items = _common._as_base_model_type(item_args[0] if item_args else None)
        plan[key] = KeptKey(_common._as_base_model_type(annotation), items)
    return plan


def remove_extra_fields(model: Any, response: dict[str, object]) -> None:
    plan = _PLANS.get(model)
    if plan is None:
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            model.model_rebuild(raise_errors=False)
        plan = _plan(model)
        if getattr(model, "__pydantic_complete__", False):  # its annotations are final
            _PLANS[model] = plan
    for key, value in list(response.items()):
        kept = plan.get(key)
        if kept is None:
            response.pop(key)
        elif isinstance(value, dict) and kept.model is not None:
            remove_extra_fields(kept.model, value)
        elif isinstance(value, list) and kept.items is not None:
            for item in value:
                if isinstance(item, dict):
                    remove_extra_fields(kept.items, item)


def replaces_sdk_function() -> bool:
    return is_source(ORIGINAL, REPLACES)


def install() -> bool:
    """Put the faster pruning in the SDK, once per process. False: the SDK's function is
    not the one this was written against, and stays."""
    if _common._remove_extra_fields is remove_extra_fields:
        return True
    if not replaces_sdk_function():
        log.info("google-genai's _remove_extra_fields changed: it keeps its own")
        return False
    _common._remove_extra_fields = remove_extra_fields
    return True
