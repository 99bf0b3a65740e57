"""A faster form of the type check google-genai runs before validating each of its models.

Every model of the SDK's (every Content and Part of a request) goes through
`_common.BaseModel._check_field_type_mismatches` before pydantic validates it. The
check only warns, and only about a field holding a pydantic model of the wrong
class. For a dict it still asks the model for every field and works out each set
field's type, although a dict without a single pydantic model among its values can
never warn. Request contents are such dicts, and the SDK validates each of them
about four times (once per branch of its contents union that could take it): on a
1,000-message history the check was a quarter of the SDK's CPU for building the
request (google-genai 3.3.0).

`check_field_type_mismatches` below is the SDK's check with that case answered
first: the same warnings and the same return for every input (tests hold it to the
original). pydantic compiled the SDK's function into each model's validator as that
model was first used, so it cannot be swapped for another function; its code is
swapped instead, which every compiled validator then runs. That happens only over
the exact function this was written against: when an upgrade changes the SDK's, the
SDK keeps its own and a test says so.
"""
from __future__ import annotations

import logging
from types import FunctionType
from typing import Any, Union, get_args, get_origin

import pydantic
from google.genai import _common

from .sdk_source import is_source

log = logging.getLogger("apsara.gemini")

# The SDK's function this one replaces, by the sha256 of its source.
REPLACES = "95c4d9d02f97b5c78bcfaee449310c040c2af327b425a3e470607aa11b413da2"

SDK_CHECK: FunctionType = _common.BaseModel.__dict__["_check_field_type_mismatches"].__func__
# The SDK's own code, kept to compare with and to put back.
ORIGINAL_CODE = SDK_CHECK.__code__
logger = _common.logger  # the name the code below reads from the SDK module's globals once swapped in


def check_field_type_mismatches(cls, data: Any) -> Any:
    # This body runs with the globals of google.genai._common: it may only use names
    # that module has (pydantic, Union, get_args, get_origin, logger and builtins).
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, pydantic.BaseModel):
                break
        else:  # the change: no pydantic model among the values, nothing to warn about
            return data
    elif not isinstance(data, pydantic.BaseModel):
        return data

    for field_name, field_info in cls.model_fields.items():
        if isinstance(data, dict):
            value = data.get(field_name)
        else:
            value = getattr(data, field_name, None)

        if value is None:
            continue

        expected_type = field_info.annotation
        origin = get_origin(expected_type)

        if origin is Union:
            args = get_args(expected_type)
            non_none_types = [arg for arg in args if arg is not type(None)]
            if len(non_none_types) == 1:
                expected_type = non_none_types[0]

        if (isinstance(expected_type, type) and
                get_origin(expected_type) is None and
                issubclass(expected_type, pydantic.BaseModel) and
                isinstance(value, pydantic.BaseModel) and
                not isinstance(value, expected_type)):
            logger.warning(
                f"Type mismatch in {cls.__name__}.{field_name}: "
                f"expected {expected_type.__name__}, got {type(value).__name__}"
            )

    return data


def sdk_original() -> FunctionType:
    """The SDK's check as it shipped, callable as (cls, data), whatever is installed."""
    return FunctionType(ORIGINAL_CODE, SDK_CHECK.__globals__, "_check_field_type_mismatches")


def replaces_sdk_function() -> bool:
    return is_source(sdk_original(), REPLACES)


def install() -> bool:
    """Run the faster check in every model of the SDK's, once per process. False: the
    SDK's check is not the one this was written against, and stays."""
    if SDK_CHECK.__code__ is check_field_type_mismatches.__code__:
        return True
    if not replaces_sdk_function():
        log.info("google-genai's _check_field_type_mismatches changed: its models keep their own")
        return False
    SDK_CHECK.__code__ = check_field_type_mismatches.__code__
    return True


def uninstall() -> None:
    """The SDK's own check again (for comparing the two)."""
    SDK_CHECK.__code__ = ORIGINAL_CODE
