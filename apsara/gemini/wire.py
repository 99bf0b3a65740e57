"""A request's history handed to google-genai as Gemini's JSON, each message converted once.

On every call the SDK validates each Content of the request into objects of its own and
converts them back to JSON: at 500 turns that was ~60 ms of a worker's CPU per turn
(three quarters of the call), for the same messages every time. A conversation's
contents are the very dicts its last turn sent (`ContentsMemo`), so the JSON the SDK
makes of each (its own conversion, run once) is kept here by the dict's identity, and the
request carries the whole history as `http_options.extra_body`, which the SDK merges into
the body it sends as it is. The SDK is still handed the newest content, for the checks
it makes of `contents` (it wants at least one); the body's list takes its place.

Nobody changes a request's contents in place (ContentsMemo's rule), so a dict seen again
is the same message. A content carrying a file's bytes is converted on each call and not
kept: it may weigh 15 MB, and its turn is the only one that sends it inline.
"""
from __future__ import annotations

import threading

from google.genai import _common, models, types

# About as many messages as the conversations ContentsMemo keeps (64): past it, the
# oldest half is let go. An entry is a few hundred bytes: its texts are the store's own.
MAX_KEPT = 50_000


def sdk_json(content: dict) -> dict:
    """What google-genai sends for one Content dict: its own validation and conversion,
    but for a content of text parts alone (most messages), whose JSON is its text and
    role as they are (the tests hold both to the SDK's bytes)."""
    role, parts = content.get("role"), content["parts"]
    if type(role) is str and type(parts) is list and content.keys() == {"role", "parts"} and all(
            type(part) is dict and part.keys() == {"text"} and type(part["text"]) is str for part in parts):
        return {"parts": [{"text": part["text"]} for part in parts], "role": role}
    converted = models._Content_to_mldev(types.Content.model_validate(content))
    return _common.encode_unserializable_types(_common.convert_to_dict(converted))


class WireHistory:
    def __init__(self, max_kept: int = MAX_KEPT):
        self._max_kept = max_kept
        self._kept: dict[int, tuple[dict, dict]] = {}  # id -> (the content, its JSON): the content is held, so its id stays its own
        self._lock = threading.Lock()

    def json_of(self, content: dict) -> dict:
        kept = self._kept.get(id(content))
        if kept is not None and kept[0] is content:
            return kept[1]
        wire = sdk_json(content)
        if not any("inline_data" in part for part in content.get("parts") or ()):
            with self._lock:
                if len(self._kept) >= self._max_kept:
                    for key in list(self._kept)[: self._max_kept // 2]:  # the oldest: dicts keep their order
                        del self._kept[key]
                self._kept[id(content)] = (content, wire)
        return wire

    def request(self, contents, config: types.GenerateContentConfig | None):
        """The (contents, config) to hand the SDK for a request of `contents` (Content dicts)."""
        if not isinstance(contents, list) or not contents or \
                not all(type(content) is dict and "parts" in content for content in contents):
            return contents, config  # a prompt's text, say: the SDK's own way
        history = [self.json_of(content) for content in contents]
        config = config if config is not None else types.GenerateContentConfig()
        options = config.http_options or types.HttpOptions()
        extra = dict(options.extra_body or {}, contents=history)
        return contents[-1:], config.model_copy(update={
            "http_options": options.model_copy(update={"extra_body": extra})})
