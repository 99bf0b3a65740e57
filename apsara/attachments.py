"""Files in a turn: which ones a message carries, and how each reaches Gemini.

A file new in the turn and small rides inline in the request; larger files and
files of earlier turns go through the Gemini Files API once and are reused
until the upload expires (then uploaded again). Pictures a model makes are
stored as files here too.
"""
from __future__ import annotations

from .errors import ApiError
from .files import FileStore
from .gemini import uploads
from .gemini.client import GeminiClient

# Files up to this size ride inside the request when they are new in this turn;
# bigger ones, and files already sent in earlier turns, go through the Files API.
INLINE_MAX_BYTES = 8 * 1024 * 1024
INLINE_BUDGET_BYTES = 15 * 1024 * 1024


class Attachments:
    def __init__(self, files: FileStore, gemini: GeminiClient):
        self.files = files
        self.gemini = gemini

    def parts_for(self, owner: str, file_ids: list[str]) -> list[dict]:
        parts = []
        for file_id in dict.fromkeys(file_ids):
            meta = self.files.attach(owner, file_id)  # marked in use: a cleanup now keeps it
            if meta is None:
                raise ApiError(404, f"file '{file_id}' not found")
            parts.append({"type": "file", "file_id": file_id, "mime_type": meta["mime_type"]})
        return parts

    def resolve(self, owner: str, context: list[dict], files, known: list[tuple[str, list[dict]]] = ()
                ) -> list[tuple[str, list[dict]]]:
        """Context messages -> (role, parts) with every file part made sendable. `files`:
        the context's file parts as (message index, part); the other messages go as they are.
        `known`: the (role, parts) of the context's first messages, already made."""
        turns = list(known)
        turns += [(message["role"], message["parts"]) for message in context[len(known):]]
        newest = len(context) - 1
        inline_left = INLINE_BUDGET_BYTES
        for index in dict.fromkeys(index for index, _ in files):
            message = context[index]
            parts = []
            for part in message["parts"]:
                if part["type"] != "file":
                    parts.append(part)
                    continue
                meta = self.files.get(owner, part["file_id"])
                if meta is None:  # removed by a cleanup: the message keeps its place, minus the file
                    continue
                signature = {"thought_signature": part["thought_signature"]} if part.get("thought_signature") else {}
                size = meta["size_bytes"]
                if index == newest and size <= INLINE_MAX_BYTES and size <= inline_left:
                    inline_left -= size
                    parts.append({"type": "inline", "mime_type": meta["mime_type"],
                                  "data": self.files.read_bytes(owner, meta["id"]), **signature})
                else:
                    ref = self._uploaded(owner, meta)
                    parts.append({"type": "uri", "uri": ref["uri"], "mime_type": ref["mime_type"], **signature})
            turns[index] = (message["role"], parts)
        return turns

    def _uploaded(self, owner: str, meta: dict) -> dict:
        """This file's live Files API upload, made now if it has none or it expired."""
        ref = meta.get("gemini")
        if uploads.usable(ref):
            return ref
        ref = uploads.upload(self.gemini, self.files.content(owner, meta["id"]), meta["mime_type"],
                             meta.get("filename") or meta["id"])
        self.files.set_gemini_ref(owner, meta["id"], ref)
        meta["gemini"] = ref
        return ref

    def forget_uploads(self, owner: str, context: list[dict]) -> bool:
        """After Gemini said a referenced file is gone: drop our references. True if any."""
        forgot = False
        for message in context:
            for part in message["parts"]:
                if part["type"] == "file" and (self.files.get(owner, part["file_id"]) or {}).get("gemini"):
                    self.files.set_gemini_ref(owner, part["file_id"], None)
                    forgot = True
        return forgot

    def image_saver(self, owner: str):
        def store(part: dict) -> dict:
            extension = part["mime_type"].split("/")[-1].split("+")[0]
            meta = self.files.save_bytes(owner, part["data"], part["mime_type"], f"generated.{extension}")
            stored = {"type": "file", "file_id": meta["id"], "mime_type": meta["mime_type"]}
            if part.get("thought_signature"):
                stored["thought_signature"] = part["thought_signature"]
            return stored
        return store
