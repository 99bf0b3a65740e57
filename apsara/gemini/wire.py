"""A request's history handed to google-genai as Gemini's JSON, each message converted once.

On every call the SDK validates each Content of the request into objects of its own and
converts them back to JSON: at 500 turns that was ~60 ms of a worker's CPU per turn
(three quarters of the call), for the same messages every time. A conversation's
contents are the very dicts its last turn sent (`ContentsMemo` keeps them), so each
Content dict made here (`ContentDict`) keeps the JSON it was first sent as, for as long as
it lives itself, and the request carries the whole history as `http_options.extra_body`,
which the SDK merges into the body it sends as it is. The SDK is handed a placeholder
content (it wants at least one), which the body's list replaces; each message was
validated by the SDK's own types when its JSON was made. Its automatic function calling
is turned off: Apsara runs its functions itself, and that loop deep-copied the config,
the whole history with it, on every call.

Nobody changes a request's contents in place (ContentsMemo's rule), so a content's JSON
stays its JSON. One that carries a file's bytes keeps nothing: it may weigh 15 MB.
"""
from __future__ import annotations

from google.genai import _common, models, types


# What the SDK itself is handed as a request's contents: the body's list replaces it.
PLACEHOLDER = [{"role": "user", "parts": [{"text": ""}]}]
NO_AUTOMATIC_CALLS = types.AutomaticFunctionCallingConfig(disable=True)


class ContentDict(dict):
    """A Content dict ({"role", "parts"}) that keeps the JSON it was sent as."""

    __slots__ = ("sent_as",)


def sdk_json(content: dict, vertex: bool = False) -> dict:
    """What google-genai sends for one Content dict: its own validation and conversion,
    but for a content of text parts alone (most messages), whose JSON is its text and
    role as they are (the tests hold both to the SDK's bytes)."""
    role, parts = content.get("role"), content.get("parts")
    if type(role) is str and type(parts) is list and content.keys() == {"role", "parts"} and all(
            type(part) is dict and part.keys() == {"text"} and type(part["text"]) is str for part in parts):
        return {"parts": [{"text": part["text"]} for part in parts], "role": role}
    to_json = models._Content_to_vertex if vertex else models._Content_to_mldev
    converted = to_json(types.Content.model_validate(content))
    return _common.encode_unserializable_types(_common.convert_to_dict(converted))


def json_of(content: dict, vertex: bool = False) -> dict:
    kept = getattr(content, "sent_as", None)  # a plain dict has none
    if kept is not None:
        return kept
    sent = sdk_json(content, vertex)
    if type(content) is ContentDict and not any("inlineData" in part for part in sent.get("parts") or ()):
        content.sent_as = sent
    return sent


def request(contents, config, vertex: bool = False):
    """The (contents, config) to hand the SDK for a request of `contents` (Content dicts).
    A request without a config is given one, to carry the history: it adds an empty
    generationConfig to the body (Gemini's defaults, as without it)."""
    if not isinstance(contents, list) or not contents or \
            not all(isinstance(content, dict) and "parts" in content for content in contents):
        return contents, config  # a prompt's text, say: the SDK's own way
    if config is None or isinstance(config, dict):
        config = types.GenerateContentConfig.model_validate(config or {})
    calling = config.automatic_function_calling
    if calling is not None and not calling.disable:
        return contents, config  # the SDK's own loop sends what it adds to the contents: its own way
    history = [json_of(content, vertex) for content in contents]
    options = config.http_options or types.HttpOptions()
    update = {"http_options": options.model_copy(update={"extra_body": dict(options.extra_body or {},
                                                                              contents=history)})}
    if calling is None:
        update["automatic_function_calling"] = NO_AUTOMATIC_CALLS
    return PLACEHOLDER, config.model_copy(update=update)
