"""Tool-call ids that carry what Gemini needs back: the thought signature and its own call id.

Gemini 3 refuses a function-call turn whose thought signature is missing, and
OpenAI's format has no field for one. Every OpenAI client does send each tool
call's `id` back with the assistant message, so the signature rides inside it:
`call_<nonce>[.s<signature>][.g<Gemini's call id>]`, both base64url. Nothing is
kept on the server, so any worker or replica can take the next request. The
signature is opaque to us and checked by Gemini itself, so the id needs no MAC:
a client that alters it only gets Gemini's refusal.
"""
from __future__ import annotations

import base64
import binascii
import secrets

PREFIX = "call_"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tool_call_id(signature: str | None = None, gemini_id: str | None = None) -> str:
    """A fresh id for one call. `signature` is the stored (standard base64) thought signature."""
    fields = [PREFIX + secrets.token_hex(8)]
    if signature:
        fields.append("s" + _b64url(base64.b64decode(signature)))
    if gemini_id:
        fields.append("g" + _b64url(gemini_id.encode()))
    return ".".join(fields)


def read_tool_call_id(value: str) -> tuple[str | None, str | None]:
    """(signature as standard base64, Gemini's call id) from an id we made; (None, None) otherwise.

    Ids made elsewhere (another provider's, a client's own) carry nothing, which
    is fine for any model that does not sign its calls.
    """
    signature = gemini_id = None
    if not value.startswith(PREFIX):
        return None, None
    for field in value.split(".")[1:]:
        try:
            raw = _unb64url(field[1:])
        except (binascii.Error, ValueError):
            return None, None
        if field.startswith("s"):
            signature = base64.b64encode(raw).decode()
        elif field.startswith("g"):
            gemini_id = raw.decode("utf-8", "replace")
    return signature, gemini_id
