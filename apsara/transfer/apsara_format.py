"""Apsara's own export: one conversation with its whole tree, enough to restore it exactly.

The document holds the conversation's header, every version of every message
as stored (thought signatures included, so the restored conversation goes on
with Gemini 3 as before), the `active` map of the tree, and the files its
messages refer to (with `files=inline`, their bytes as base64). An imported
document is checked as strictly as a request: it becomes stored state.
"""
from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..conversations.tree import MessageTree, ROOT
from ..files import clean_filename
from ..schemas import ID_REGEX
from . import Imported
from .common import iso_from_text

FORMAT = "apsara.conversation"
VERSION = 1
# Kept for Gemini's sake: a thought signature goes back to the model. A Files API
# reference belongs to the exporting server's key and is never carried over.
_DROPPED_PART_FIELDS = ("gemini_file",)
_HEADER_FIELDS = ("id", "title", "title_source", "created_at", "updated_at", "model", "system_instruction",
                  "tools", "settings", "archived", "pinned")
_PART_TYPES = ("text", "thought", "file", "code", "code_result", "function_call", "function_response")
# What each part type must hold: what sending, planning and showing a turn read of it
# without a default. The rest are optional; a thought signature may ride on any part.
_REQUIRED_BY_TYPE = {"text": ("text",), "thought": ("text",), "file": ("file_id", "mime_type"),
                     "code": ("code",), "code_result": ("output",), "function_call": ("name",),
                     "function_response": ("name",)}
_STATUSES = ("complete", "stopped", "interrupted", "error", "blocked", "streaming")
# `\Z`, not `$`: marshmallow's Regexp uses re.match, where `$` also matches before a final newline.
_ID_ONLY = ID_REGEX.removesuffix("$") + r"\Z"
_Id = lambda **kw: fields.String(validate=validate.Regexp(_ID_ONLY), **kw)  # noqa: E731


class _Time(fields.String):
    """An ISO 8601 time with its offset, kept as the API writes times (UTC, milliseconds):
    stored times are compared as text, and each becomes nanoseconds in a 64-bit integer."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return iso_from_text(text)
        except ValueError as refused:
            raise ValidationError(str(refused)) from None


def detect(document) -> bool:
    entries = document if isinstance(document, list) else [document]
    return bool(entries) and all(isinstance(e, dict) and e.get("format") == FORMAT for e in entries)


def export_document(document: dict, files: list[dict]) -> dict:
    """The export of a stored conversation; `files` are the public records (plus `data` when inline)."""
    header = document["conversation"]
    messages = []
    for message in document.get("messages", ()):
        kept = {k: v for k, v in message.items() if not k.startswith("_")}
        kept["parts"] = [{k: v for k, v in part.items() if k not in _DROPPED_PART_FIELDS}
                         for part in message.get("parts", ())]
        messages.append(kept)
    return {"format": FORMAT, "version": VERSION,
            "conversation": {k: header[k] for k in _HEADER_FIELDS if k in header},
            "messages": messages, "active": dict(document.get("active", {})), "files": files}


class _PartSchema(Schema):
    class Meta:
        unknown = "raise"
    type = fields.String(required=True, validate=validate.OneOf(_PART_TYPES))
    text = fields.String(validate=validate.Length(max=1_000_000))
    file_id = _Id()
    mime_type = fields.String(validate=validate.Length(max=200))
    url = fields.String()  # signed links die; a fresh one is made when shown
    language = fields.String(validate=validate.Length(max=100))
    code = fields.String(validate=validate.Length(max=1_000_000))
    outcome = fields.String(validate=validate.Length(max=100))
    output = fields.String(validate=validate.Length(max=1_000_000))
    name = fields.String(validate=validate.Length(min=1, max=200))
    id = fields.String(validate=validate.Length(max=200))
    call_id = fields.String(validate=validate.Length(max=200))  # pairs a function's call and response
    args = fields.Dict()
    response = fields.Dict()
    thought_signature = fields.String(validate=validate.Length(max=4_000_000))
    gemini_file = fields.Dict()

    @validates_schema
    def _fields_of_its_type(self, data, **_kwargs):
        """A file part without its file, or a call without its function's name, would be stored
        and then break every later turn of the conversation."""
        missing = [name for name in _REQUIRED_BY_TYPE[data["type"]] if name not in data]
        if missing:
            raise ValidationError({name: [f"Missing data for required field (a {data['type']} part has it)."]
                                   for name in missing})


class _MessageSchema(Schema):
    class Meta:
        unknown = "raise"
    id = _Id(required=True)
    role = fields.String(required=True, validate=validate.OneOf(("user", "model")))
    parent_id = _Id(required=True, allow_none=True)
    created_at = _Time(required=True)
    parts = fields.List(fields.Nested(_PartSchema), required=True, validate=validate.Length(max=10_000))
    model = fields.String(validate=validate.Length(max=200))
    status = fields.String(validate=validate.OneOf(_STATUSES))
    finish_reason = fields.String(allow_none=True, validate=validate.Length(max=100))
    usage = fields.Dict(allow_none=True)
    grounding = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)
    routing = fields.Dict(allow_none=True)
    parsed = fields.Raw(allow_none=True)
    last_event_id = fields.Integer(allow_none=True)


class _FileSchema(Schema):
    class Meta:
        unknown = "raise"
    id = _Id(required=True)
    filename = fields.String(validate=validate.Length(max=255))
    mime_type = fields.String(validate=validate.Length(max=200))
    size_bytes = fields.Integer()
    sha256 = fields.String(validate=validate.Length(max=64))
    created_at = _Time()
    url = fields.String()
    data = fields.String()


class _HeaderSchema(Schema):
    class Meta:
        unknown = "exclude"  # summary fields such as message_count are derived again
    id = _Id()
    title = fields.String(validate=validate.Length(max=200))
    title_source = fields.String(allow_none=True, validate=validate.OneOf(("user", "auto")))
    created_at = _Time()
    updated_at = _Time()
    model = fields.String(validate=validate.Length(max=200))
    system_instruction = fields.String(validate=validate.Length(max=200_000))
    tools = fields.List(fields.String(validate=validate.Length(max=100)), validate=validate.Length(max=50))
    settings = fields.Dict()
    archived = fields.Boolean()
    pinned = fields.Boolean()


class ExportSchema(Schema):
    class Meta:
        unknown = "raise"
    format = fields.String(required=True, validate=validate.Equal(FORMAT))
    version = fields.Integer(required=True, validate=validate.Equal(VERSION))
    exported_at = fields.String()
    conversation = fields.Nested(_HeaderSchema, required=True)
    messages = fields.List(fields.Nested(_MessageSchema), required=True)
    active = fields.Dict(keys=fields.String(), values=_Id(), required=True)
    files = fields.List(fields.Nested(_FileSchema), load_default=list)

    @validates_schema
    def _a_tree(self, data, **_kwargs):
        """Parents before children, unique ids, and `active` pointing at real children."""
        seen = set()
        for n, message in enumerate(data["messages"]):
            if message["id"] in seen:
                raise ValidationError({f"messages.{n}.id": ["repeats an earlier message's id"]})
            if message["parent_id"] is not None and message["parent_id"] not in seen:
                raise ValidationError({f"messages.{n}.parent_id": ["names no earlier message"]})
            seen.add(message["id"])
        tree = MessageTree(data["messages"], {})
        for parent, child in data["active"].items():
            if child not in tree.children.get(parent, ()):
                raise ValidationError({f"active.{parent or ROOT}": ["is not a child of that message"]})


def convert(entry: dict) -> tuple[Imported | None, dict]:
    """One exported conversation, or the per-field problems that refuse it."""
    try:
        data = ExportSchema().load(entry)
    except ValidationError as error:
        return None, error.normalized_messages()
    for record in data["files"]:
        if "filename" in record:
            record["filename"] = clean_filename(record["filename"])
            if not record["filename"]:
                del record["filename"]  # nothing left to show: the file goes by its id
        if "data" in record:
            try:
                record["data"] = base64.b64decode(record["data"], validate=True)
            except (binascii.Error, ValueError):
                return None, {"files": [f"file '{record['id']}' has data that is not base64"]}
    header = dict(data["conversation"])
    source_id = header.pop("id", None)
    return Imported(header=header, messages=data["messages"], active=data["active"], id=source_id,
                    files=data["files"]), {}
