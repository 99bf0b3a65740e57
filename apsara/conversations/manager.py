"""The rules of conversations: who owns what, what may change, what a client sees.

Views hand over plain dicts already checked by a schema; the manager validates
choices against the model catalog, reads and writes through the store under
the conversation's lock, and builds the API's view of a conversation (the
active path, each message with its versions). Nothing here knows HTTP.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
from typing import Callable

from ..clock import new_id, now_iso
from ..errors import ApiError
from ..gemini.catalog import ModelCatalog
from .options import check_choice
from .store import ConversationStore, InvalidId, LockTimeout, check_id
from .tree import MessageTree

HEADER_FIELDS = ("id", "title", "created_at", "updated_at", "model", "system_instruction",
                 "tools", "settings", "message_count")
# Stored with a part for Gemini's sake, never shown to clients.
PRIVATE_PART_FIELDS = ("thought_signature", "gemini_file")


def _not_found(conversation_id) -> ApiError:
    return ApiError(404, f"conversation '{conversation_id}' not found")


def encode_cursor(position: tuple[int, str]) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        mtime_ns, conversation_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(mtime_ns, int) or not isinstance(conversation_id, str):
            raise ValueError
        return mtime_ns, conversation_id
    except (ValueError, TypeError, UnicodeError):
        raise ApiError(422, "cursor is not one this server gave out",
                       {"cursor": ["not a valid cursor"]}) from None


def message_text(message: dict) -> str:
    return "".join(p.get("text", "") for p in message.get("parts", ()) if p.get("type") == "text")


def public_part(part: dict) -> dict:
    if "thought_signature" not in part and "gemini_file" not in part:
        return part
    return {k: v for k, v in part.items() if k not in PRIVATE_PART_FIELDS}


def _public_parts(parts: list[dict], link) -> list[dict]:
    shown = []
    for part in parts:
        part = public_part(part)
        if link is not None and part.get("type") == "file":
            part = {**part, "url": link(part["file_id"])}
        shown.append(part)
    return shown


def message_view(message: dict, tree: MessageTree | None = None, link=None) -> dict:
    """A stored message as the API shows it. `link(file_id)` gives file parts a fresh signed URL."""
    view = message.copy()
    if view.get("status") == "streaming" and not _writer_alive(message):
        view["status"] = "interrupted"  # its writer died; the next turn will record it so
    view.pop("_writer", None)  # who is writing a reply: bookkeeping, not API
    view["parts"] = _public_parts(message.get("parts", ()), link)
    view["text"] = message_text(message)
    view["siblings"] = tree.siblings(message) if tree is not None else [message["id"]]
    return view


def summary_view(header: dict) -> dict:
    # "_" keys (the context-cache record) are bookkeeping, not API.
    return {k: v for k, v in header.items() if not k.startswith("_")}


def conversation_view(document: dict, with_messages: bool = True, link=None) -> dict:
    view = summary_view(document["conversation"])
    if with_messages:
        tree = MessageTree.of(document)
        view["messages"] = [message_view(m, tree, link) for m in tree.active_path()]
    return view


# A reply still "streaming" whose writer died (crash, restart) is shown as interrupted.
STALE_STREAM_S = 1800.0
_HOST = socket.gethostname()


def _writer_alive(message: dict) -> bool:
    writer = message.get("_writer") or {}
    started = writer.get("started", 0)
    if time.time() - started > STALE_STREAM_S:
        return False
    if writer.get("host") != _HOST:
        return True  # another machine's process: trust it until it is stale
    try:
        os.kill(writer["pid"], 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError):
        return True
    return True


def settle_dead_streams(tree: MessageTree) -> None:
    for message in tree.messages:
        if message.get("status") == "streaming" and not _writer_alive(message):
            message["status"] = "interrupted"
            message.pop("_writer", None)


def context_path(tree: MessageTree, upto: str | None) -> list[dict]:
    """What the model is sent: the path from the root to `upto`, user messages and
    complete replies only (failed, blocked, interrupted replies never go back)."""
    path = []
    node = tree.get(upto) if upto else None
    while node is not None:
        if node["role"] == "user" or node.get("status") == "complete":
            path.append(node)
        node = tree.get(node["parent_id"]) if node["parent_id"] else None
    path.reverse()
    return path


class Turn:
    """What `begin_turn` stored and what the call to Gemini needs."""

    def __init__(self, header, user_message, reply, context, choice):
        self.header = header
        self.user_message = user_message
        self.reply = reply
        self.context = context
        self.choice = choice
        self.error = None  # the ApiError a failed reply ended with
        self.persist = True  # False for /generate: nothing is stored


class ConversationManager:
    def __init__(self, store: ConversationStore, catalog: ModelCatalog, default_model: str,
                 file_url: Callable[[str, str], str] | None = None):
        self.store = store
        self.catalog = catalog
        self._default_model = default_model
        self._file_url = file_url

    def link(self, owner: str):
        """How file parts of this owner's messages get their signed URLs."""
        if self._file_url is None:
            return None
        return lambda file_id: self._file_url(owner, file_id)

    # -- choices ---------------------------------------------------------------
    def default_model(self) -> str:
        """The configured default when the catalog offers it, else the best Flash it offers."""
        return self.catalog.default_model(self._default_model)[0]

    # -- reading ---------------------------------------------------------------
    def load(self, owner: str, conversation_id: str) -> dict:
        try:
            document = self.store.read(owner, conversation_id)
        except InvalidId:
            document = None
        if document is None:
            raise _not_found(conversation_id)
        return document

    def get(self, owner: str, conversation_id: str) -> dict:
        return conversation_view(self.load(owner, conversation_id), link=self.link(owner))

    def list(self, owner: str, limit: int, cursor: str | None):
        after = decode_cursor(cursor) if cursor else None
        headers, last = self.store.list_headers(owner, limit, after)
        return [summary_view(h) for h in headers], (encode_cursor(last) if last else None)

    # -- writing ---------------------------------------------------------------
    @contextlib.contextmanager
    def editing(self, owner: str, conversation_id: str):
        """Lock, load, let the caller change the document, save it: all or nothing."""
        self._check_id(conversation_id)
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            yield document
            self.save(owner, document)

    @contextlib.contextmanager
    def _locked(self, owner: str, conversation_id: str):
        try:
            with self.store.locked(owner, conversation_id):
                yield
        except LockTimeout:
            raise ApiError(503, f"conversation '{conversation_id}' is busy; try again",
                           headers={"Retry-After": "1"}) from None

    def _check_id(self, conversation_id: str) -> None:
        try:
            check_id(conversation_id)
        except InvalidId:
            raise _not_found(conversation_id) from None

    def save(self, owner: str, document: dict) -> None:
        header = document["conversation"]
        header["updated_at"] = max(now_iso(), header["updated_at"])
        header["message_count"] = len(MessageTree.of(document).active_path())
        self.store.write(owner, header["id"], document)

    def create(self, owner: str, fields: dict) -> dict:
        model = fields.get("model") or self.default_model()
        tools = list(dict.fromkeys(fields.get("tools") or []))
        settings = {k: v for k, v in (fields.get("settings") or {}).items() if v is not None}
        check_choice(self.catalog, model, tools, settings)
        conversation_id = fields.get("id")
        chosen = conversation_id is not None
        for _attempt in range(5):
            conversation_id = conversation_id or new_id()
            with self._locked(owner, conversation_id):
                if not self.store.exists(owner, conversation_id):
                    stamp = now_iso()
                    document = {"conversation": {
                        "id": conversation_id, "title": fields.get("title") or "",
                        "created_at": stamp, "updated_at": stamp, "model": model,
                        "system_instruction": fields.get("system_instruction") or "",
                        "tools": tools, "settings": settings, "message_count": 0,
                    }, "messages": [], "active": {}}
                    self.store.write(owner, conversation_id, document)
                    return conversation_view(document)
            if chosen:
                raise ApiError(409, f"conversation '{conversation_id}' already exists")
            conversation_id = None
        raise ApiError(500, "could not pick a free conversation id")

    def update(self, owner: str, conversation_id: str, changes: dict) -> dict:
        with self.editing(owner, conversation_id) as document:
            header = document["conversation"]
            model = changes.get("model") or header["model"]
            tools = list(dict.fromkeys(changes["tools"])) if changes.get("tools") is not None else header["tools"]
            settings = dict(header["settings"])
            for key, value in (changes.get("settings") or {}).items():
                if value is None:
                    settings.pop(key, None)  # null returns the key to its default
                else:
                    settings[key] = value
            check_choice(self.catalog, model, tools, settings)
            for key in ("title", "system_instruction"):
                if changes.get(key) is not None:
                    header[key] = changes[key]
            header.update(model=model, tools=tools, settings=settings)
        return conversation_view(document, link=self.link(owner))

    def delete(self, owner: str, conversation_id: str) -> dict | None:
        """Delete; returns the context-cache record the conversation had, for cleaning up."""
        self._check_id(conversation_id)
        with self._locked(owner, conversation_id):
            header = self.store.read_header(owner, conversation_id)
            if header is None or not self.store.delete(owner, conversation_id):
                raise _not_found(conversation_id)
        return header.get("_cache")

    def set_cache_record(self, owner: str, conversation_id: str, record: dict | None) -> None:
        try:
            with self.editing(owner, conversation_id) as document:
                document["conversation"]["_cache"] = record
        except ApiError:
            pass  # deleted meanwhile

    # -- turns ------------------------------------------------------------------
    def begin_turn(self, owner: str, conversation_id: str, *, kind: str, target_id: str | None = None,
                   user_parts: Callable[[dict | None], list[dict]] | None = None,
                   choose: Callable[[dict, list[dict]], object]) -> Turn:
        """Store the user's message (send, edit) and an empty reply being written.

        kind: "send" continues from the end of the active path; "edit" adds a new
        version of user message `target_id`; "regenerate" a new version of model
        reply `target_id`. `choose(header, context)` validates the model, tools and
        files for this turn and returns the choice; raising there stores nothing.
        """
        with self.editing(owner, conversation_id) as document:
            tree = MessageTree.of(document)
            settle_dead_streams(tree)
            if any(m.get("status") == "streaming" for m in tree.messages):
                raise ApiError(409, "a reply is still being written in this conversation; "
                                    "try again when it is done")
            target = None
            if kind == "send":
                last = tree.last()
                parent_id = last["id"] if last else None
            else:
                target = tree.get(target_id)
                if target is None:
                    raise ApiError(404, f"message '{target_id}' not found")
                wanted = "user" if kind == "edit" else "model"
                if target["role"] != wanted:
                    verb = "edited" if kind == "edit" else "regenerated"
                    raise ApiError(422, f"only {wanted} messages can be {verb}; message "
                                        f"'{target_id}' is a {target['role']} message",
                                   {"message_id": [f"not a {wanted} message"]})
                parent_id = target["parent_id"]
            stamp = now_iso()
            user = None
            if kind != "regenerate":
                user = tree.add({"id": new_id("m"), "role": "user", "parent_id": parent_id,
                                 "created_at": stamp, "parts": user_parts(target)})
                parent_id = user["id"]
            context = context_path(tree, parent_id)
            # Raising here leaves the file untouched: `editing` saves only on success.
            choice = choose(document["conversation"], context)
            reply = tree.add({"id": new_id("m"), "role": "model", "parent_id": parent_id,
                              "created_at": stamp, "parts": [], "model": choice.model.id,
                              "status": "streaming",
                              **({"routing": choice.routing} if getattr(choice, "routing", None) else {}),
                              "_writer": {"pid": os.getpid(), "host": _HOST, "started": time.time()}})
            tree.select(reply["id"])
            link = self.link(owner)
            turn = Turn(dict(document["conversation"]), message_view(user, tree, link) if user else None,
                        message_view(reply, tree, link), context, choice)
        return turn

    def finish_reply(self, owner: str, conversation_id: str, reply_id: str, fields: dict) -> dict:
        """Store the outcome of a reply; returns the stored reply as the API shows it."""
        try:
            with self.editing(owner, conversation_id) as document:
                tree = MessageTree.of(document)
                reply = tree.get(reply_id)
                if reply is None:
                    raise ApiError(404, f"message '{reply_id}' not found")
                reply.update(fields)
                reply.pop("_writer", None)
                return message_view(reply, tree, self.link(owner))
        except ApiError as error:
            if error.code != 404:
                raise
            # The conversation was deleted while the reply was written: nothing to keep.
            return message_view({"id": reply_id, "role": "model", "parent_id": None,
                                 "created_at": now_iso(), **fields}, link=self.link(owner))

    def select(self, owner: str, conversation_id: str, message_id: str) -> dict:
        with self.editing(owner, conversation_id) as document:
            tree = MessageTree.of(document)
            if tree.get(message_id) is None:
                raise ApiError(404, f"message '{message_id}' not found")
            tree.select(message_id)
        return conversation_view(document, link=self.link(owner))
