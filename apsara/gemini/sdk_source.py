"""Whether a function of google-genai's is still the code a faster piece was written against.

Apsara puts a few faster pieces into the SDK (field_lookup, type_check, extra_fields), each
with the same answers as the SDK function it stands in for. They are put in only while that
function's source is exactly the one they were written against, known by its sha256: an
upgrade that changes it leaves the SDK its own, and the tests say so.
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Callable


def is_source(function: Callable, sha256: str) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # installed without sources
        return False
    return hashlib.sha256(source.encode()).hexdigest() == sha256
