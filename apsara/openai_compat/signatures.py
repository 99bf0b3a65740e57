"""Where Gemini's thought signatures ride through OpenAI's format, which has no field for them.

Gemini 3 refuses a function-call turn whose thought signature is missing. Every
OpenAI client sends each tool call's `id` back with the assistant message, so
the signature rides inside it: `call_<nonce>[.s<signature>][.g<Gemini's call
id>][.m<model>]`, each base64url. The model is there so that `auto` sends the
results back to the model that asked for them, which alone can read its
signatures. A picture an image model made comes back as a Markdown image whose
data URL carries its signature as a `;signature=` parameter. Nothing is kept on
the server, so any worker or replica can take the next request. A signature is
opaque to us and checked by Gemini itself, so it needs no MAC: a client that
alters one only gets Gemini's refusal.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from typing import NamedTuple

PREFIX = "call_"


def to_param(signature: str) -> str:
    """A stored (standard base64) signature -> base64url without padding, safe in ids and data URLs."""
    return _b64url(base64.b64decode(signature))


def from_param(value: str) -> str | None:
    """The reverse of `to_param`; None for anything that is not base64url."""
    raw = _unb64url(value)
    return base64.b64encode(raw).decode() if raw is not None else None


class CarriedCall(NamedTuple):
    """What a tool-call id made here carries back; all None for an id made elsewhere."""

    signature: str | None = None  # standard base64, as stored
    gemini_id: str | None = None
    model: str | None = None


def tool_call_id(signature: str | None = None, gemini_id: str | None = None, model: str | None = None) -> str:
    """A fresh id for one call, carrying its signature, Gemini's own id for it and the model that made it."""
    fields = [PREFIX + secrets.token_hex(8)]
    if signature:
        fields.append("s" + to_param(signature))
    if gemini_id:
        fields.append("g" + _b64url(gemini_id.encode()))
    if model:
        fields.append("m" + _b64url(model.encode()))
    return ".".join(fields)


def read_tool_call_id(value: str) -> CarriedCall:
    """What an id made here carries. Ids made elsewhere (another provider's, a client's own) carry
    nothing, which is fine for any model that does not sign its calls."""
    if not value.startswith(PREFIX):
        return CarriedCall()
    found = {}
    for field in value.split(".")[1:]:
        if field.startswith("s"):
            found["signature"] = from_param(field[1:])
        elif field[:1] in ("g", "m"):
            raw = _unb64url(field[1:])
            found["gemini_id" if field[0] == "g" else "model"] = raw.decode("utf-8", "replace") if raw else None
    return CarriedCall(**found)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
