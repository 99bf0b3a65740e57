"""The rules of conversations: who owns what, what may change, what a client sees.

Views hand over plain dicts already checked by a schema; the manager validates
choices against the model catalog, reads through the store, changes a
conversation by appending records under its lock (see journal.py), and answers
with what a client sees of it (views.py). A turn is planned elsewhere without
the lock; `commit_turn` only checks that the tree has not moved since and
appends. Nothing here knows HTTP.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Callable

from ..clock import new_id, now_iso
from ..errors import ApiError
from ..gemini.catalog import ModelCatalog
from .filters import ListFilters
from .journal import Replay, record
from .locks import LockTimeout, Missing
from .options import check_choice
from .store import ConversationStore, InvalidId, NotKept
from .tree import DERIVED, MessageTree
from .views import conversation_view, decode_cursor, encode_cursor, message_view, summary_view
from .writers import age_s, new_writer, streaming, writer_alive

log = logging.getLogger("apsara.conversations")

# How long after its end a reply keeps its own events through a compaction, for clients resuming it.
RESUME_WINDOW_S = 600.0


def _not_found(conversation_id) -> ApiError:
    return ApiError(404, f"conversation '{conversation_id}' not found")


@dataclass
class Turn:
    """A planned turn: what will be stored, and what the call to Gemini needs."""

    header: dict
    user_message: dict | None  # the stored user message as the API shows it (send, edit)
    reply: dict                # the reply as the API shows it, status "streaming"
    context: list[dict]
    choice: object
    conversation_id: str | None = None
    kind: str = "send"
    parent_id: str | None = None       # where the turn attaches (checked again under the lock)
    stored_user: dict | None = None    # the records' payloads
    stored_reply: dict | None = None
    first_event_id: int = 1            # id of reply_start in the stream
    error: ApiError | None = None      # the ApiError a failed reply ended with
    persist: bool = True               # False for /generate: nothing is stored
    request: tuple | None = field(default=None, repr=False)  # (contents, config) ready to send
    position: tuple | None = None      # the store's read position just after the turn's records
    bill: object = None                # the usage bill this turn's Gemini calls go on
    files: tuple = ()                  # the context's file parts: (message index, part)
    known_turns: list = field(default_factory=list)  # (role, parts) of the context's first messages, kept
    # From the write of its records to the end of their commit: a failure then (a COMMIT the
    # database never answered) may or may not have stored them, which only the conversation tells.
    unsure: bool = False


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
        return self.load_with_position(owner, conversation_id)[0]

    def load_with_position(self, owner: str, conversation_id: str):
        """(document, position); 404 for a conversation that is not there."""
        try:
            loaded = self.store.load(owner, conversation_id)
        except InvalidId:
            loaded = None
        if loaded is None:
            raise _not_found(conversation_id)
        return loaded

    def get(self, owner: str, conversation_id: str) -> dict:
        return conversation_view(self.load(owner, conversation_id), link=self.link(owner))

    def list(self, owner: str, limit: int, cursor: str | None, filters: ListFilters = ListFilters(),
             query: str | None = None):
        """A page of summaries, newest first; with `query`, only matching ones, each with its snippet."""
        after = decode_cursor(cursor) if cursor else None
        if query is not None:
            found = self.store.search(owner, query, limit + 1, after, filters)
            page = found[:limit]
            items = [{**summary_view(header), "snippet": snippet} for header, snippet, _ in page]
            return items, (encode_cursor(page[-1][2]) if len(found) > limit else None)
        headers, last = self.store.list_headers(owner, limit, after, filters)
        return [summary_view(h) for h in headers], (encode_cursor(last) if last else None)

    # -- writing ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, owner: str, conversation_id: str, existing: bool = True):
        """The conversation's lock; 404 for one that is not there (leaving no lock file)."""
        try:
            with self.store.locked(owner, conversation_id, existing=existing):
                yield
        except InvalidId:
            raise _not_found(conversation_id) from None
        except Missing:
            raise _not_found(conversation_id) from None
        except LockTimeout:
            raise ApiError(503, f"conversation '{conversation_id}' is busy; try again",
                           headers={"Retry-After": "1"}) from None
        except NotKept:
            raise ApiError(503, "the change could not be stored (the disk refused it); nothing was kept: "
                                "try again", headers={"Retry-After": "1"}) from None

    def _append(self, owner: str, conversation_id: str, document: dict, records: list[dict],
                tree: MessageTree | None = None, **options) -> dict:
        """Append records under the held lock and apply them to `document` (and to `tree`,
        the document's tree if the caller has one: it stays in step, no need to build another)."""
        applier = Replay(document, tree)
        for rec in records:
            applier.apply(rec)
        applier.count_messages()
        mark = self.store.append(owner, conversation_id, records,
                                 message_count=document["conversation"].get("message_count"), **options)
        for rec in records:
            document["seq"] = max(document.get("seq", 0), rec["seq"])
        if self.store.needs_compaction(mark):
            self._compact(owner, conversation_id, document)
        return mark

    def _compact(self, owner: str, conversation_id: str, document: dict) -> None:
        """Fold the records into a new snapshot. Replies that ended more than RESUME_WINDOW_S
        ago leave their events behind (they replay as one event per part)."""
        def pruned(message: dict) -> dict:
            if "_events" in message and message.get("status") != "streaming" \
                    and age_s(message.get("_ended_at")) > RESUME_WINDOW_S:
                return {k: v for k, v in message.items() if k != "_events"}
            return message
        snapshot = {**document, "messages": [pruned(m) for m in document["messages"]]}
        try:
            self.store.write(owner, conversation_id, snapshot)
        except OSError:
            # The change is on disk already, as records; a new snapshot only saves reading them.
            # Failing the change for it would have its caller try again, and store it twice.
            log.exception("conversation %s: could not fold its records into a new snapshot", conversation_id)

    @contextlib.contextmanager
    def editing(self, owner: str, conversation_id: str):
        """Lock, load, let the caller change the document, store the change: all or nothing.

        A changed header becomes a `conversation` record; any change to the messages
        is stored as a new snapshot."""
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            header = json.dumps(document["conversation"], sort_keys=True, default=str)
            shape = (len(document.get("messages", [])), dict(document.get("active", {})))
            yield document
            document.pop(DERIVED, None)  # changed in place, past what the tree keeps track of
            if (len(document.get("messages", [])), document.get("active", {})) != shape:
                document["conversation"]["updated_at"] = max(now_iso(), document["conversation"]["updated_at"])
                document["conversation"]["message_count"] = len(MessageTree.of(document).active_path())
                self.store.write(owner, conversation_id, document)
            elif json.dumps(document["conversation"], sort_keys=True, default=str) != header:
                changed = {k: v for k, v in document["conversation"].items() if k not in ("updated_at",)}
                self._append(owner, conversation_id, document, [record(0, "conversation", now_iso(),
                                                                        conversation=changed)])

    def create(self, owner: str, fields: dict) -> dict:
        model = fields.get("model") or self.default_model()
        tools = list(dict.fromkeys(fields.get("tools") or []))
        settings = {k: v for k, v in (fields.get("settings") or {}).items() if v is not None}
        check_choice(self.catalog, model, tools, settings)
        conversation_id = fields.get("id")
        chosen = conversation_id is not None
        for _attempt in range(5):
            conversation_id = conversation_id or new_id()
            with self._locked(owner, conversation_id, existing=False):
                if not self.store.exists(owner, conversation_id):
                    stamp = now_iso()
                    title = fields.get("title") or ""
                    document = {"conversation": {
                        "id": conversation_id, "title": title, "title_source": "user" if title else None,
                        "created_at": stamp, "updated_at": stamp, "model": model,
                        "system_instruction": fields.get("system_instruction") or "",
                        "tools": tools, "settings": settings, "message_count": 0,
                        "archived": False, "pinned": False, "temporary": bool(fields.get("temporary")),
                    }, "messages": [], "active": {}, "seq": 0}
                    self.store.write(owner, conversation_id, document)
                    return conversation_view(document)
            if chosen:
                raise ApiError(409, f"conversation '{conversation_id}' already exists")
            conversation_id = None
        raise ApiError(500, "could not pick a free conversation id")

    def update(self, owner: str, conversation_id: str, changes: dict) -> dict:
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            header = dict(document["conversation"])
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
            if changes.get("title") is not None:
                header["title_source"] = "user" if changes["title"] else None
            for flag in ("archived", "pinned"):
                if changes.get(flag) is not None:
                    header[flag] = changes[flag]
            header.update(model=model, tools=tools, settings=settings)
            self._append(owner, conversation_id, document, [record(0, "conversation", now_iso(), conversation=header)])
        return conversation_view(document, link=self.link(owner))

    def delete(self, owner: str, conversation_id: str) -> dict | None:
        """Delete; returns the context-cache record the conversation had, for cleaning up."""
        with self._locked(owner, conversation_id):
            header = self.store.read_header(owner, conversation_id)
            if header is None or not self.store.delete(owner, conversation_id):
                raise _not_found(conversation_id)
        return header.get("_cache")

    def set_auto_title(self, owner: str, conversation_id: str, title: str) -> bool:
        """Store a title the server wrote, unless the conversation has one by now (a user's
        is never overwritten) or is gone. True when stored."""
        try:
            with self._locked(owner, conversation_id):
                document = self.load(owner, conversation_id)
                header = document["conversation"]
                if header.get("title") or header.get("title_source"):
                    return False
                changed = {**header, "title": title, "title_source": "auto"}
                self._append(owner, conversation_id, document, [record(0, "conversation", now_iso(),
                                                                        conversation=changed)])
                return True
        except ApiError:
            return False

    def store_new(self, owner: str, document: dict, wanted_id: str | None, exact: bool = False) -> dict:
        """Store a whole conversation made elsewhere (an import, a fork) under `wanted_id` when it
        is free for this owner, else under a new id (`exact`: 409 instead). Returns the stored document."""
        conversation_id = wanted_id
        for _attempt in range(5):
            conversation_id = conversation_id or new_id()
            with self._locked(owner, conversation_id, existing=False):
                if not self.store.exists(owner, conversation_id):
                    tree = MessageTree.of(document)
                    document["conversation"] = {**document["conversation"], "id": conversation_id,
                                                "message_count": len(tree.active_path())}
                    document["seq"] = 0
                    try:
                        self.store.write(owner, conversation_id, document)
                    except BaseException:
                        # A write that failed once its file was made (in the search index's step, say)
                        # would leave a conversation its caller was never given, and cannot take back.
                        with contextlib.suppress(Exception):
                            self.store.delete(owner, conversation_id)
                        raise
                    return document
            if exact:
                raise ApiError(409, f"conversation '{conversation_id}' already exists")
            conversation_id = None
        raise ApiError(500, "could not pick a free conversation id")

    def remove(self, owner: str, conversation_id: str, only_import: str | None = None) -> bool:
        """Take back a conversation this request stored (an import refused part way), or that
        the import `only_import` stored (one its killed writer never ended): not if it is
        another's. True if it was removed; raises if it could not be now (its lock busy)."""
        try:
            with self._locked(owner, conversation_id):
                if only_import is not None:
                    header = self.store.read_header(owner, conversation_id)
                    if header is None or header.get("_import") != only_import:
                        return False
                return self.store.delete(owner, conversation_id)
        except ApiError as refused:
            if refused.code == 404:
                return False  # not there: nothing to take back
            raise  # its lock busy: not taken back

    def delete_expired(self, owner: str, conversation_id: str, cutoff: str) -> bool:
        """Delete a temporary conversation whose last message is older than `cutoff`
        (checked again under its lock: a new message may have come since the index said so)."""
        try:
            with self._locked(owner, conversation_id):
                document = self.load(owner, conversation_id)
                header = document["conversation"]
                last = max([m.get("_ended_at") or m["created_at"] for m in document.get("messages", ())]
                           + [header["created_at"]])
                if not header.get("temporary") or last >= cutoff:
                    return False
                if any(m.get("status") == "streaming" and writer_alive(m) for m in document.get("messages", ())):
                    return False
                return self.store.delete(owner, conversation_id)
        except ApiError:
            return False

    def set_cache_record(self, owner: str, conversation_id: str, cache: dict | None) -> None:
        try:
            with self._locked(owner, conversation_id):
                document = self.load(owner, conversation_id)
                header = {**document["conversation"], "_cache": cache}
                self._append(owner, conversation_id, document, [record(0, "conversation", now_iso(),
                                                                        conversation=header)], sync=False)
        except ApiError:
            pass  # deleted meanwhile

    def select(self, owner: str, conversation_id: str, message_id: str) -> dict:
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            if MessageTree.of(document).get(message_id) is None:
                raise ApiError(404, f"message '{message_id}' not found")
            self._append(owner, conversation_id, document, [record(0, "select", now_iso(), id=message_id)])
        return conversation_view(document, link=self.link(owner))

    # -- turns ------------------------------------------------------------------
    def turn_basis(self, owner: str, conversation_id: str, kind: str, target_id: str | None):
        """Where a turn attaches, read without the lock: (document, tree, parent id, target).

        kind: "send" continues from the end of the active path; "edit" adds a new
        version of user message `target_id`; "regenerate" a new version of model
        reply `target_id`. Refuses (409) while a reply is being written."""
        document = self.load(owner, conversation_id)
        tree = MessageTree.of(document)
        self._refuse_if_streaming(tree)
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
        return document, tree, parent_id, target

    @staticmethod
    def _refuse_if_streaming(tree: MessageTree) -> list[dict]:
        """409 while a reply is being written; else the replies whose writer died."""
        alive, dead = streaming(tree)
        if alive:
            raise ApiError(409, "a reply is still being written in this conversation; "
                                "try again when it is done")
        return dead

    def new_messages(self, turn: Turn, parts: list[dict] | None, choice) -> None:
        """The user message (send, edit) and the empty reply a planned turn will store."""
        stamp = now_iso()
        parent_id = turn.parent_id
        if parts is not None:
            turn.stored_user = {"id": new_id("m"), "role": "user", "parent_id": parent_id,
                                "created_at": stamp, "parts": parts}
            parent_id = turn.stored_user["id"]
        turn.first_event_id = 2 if turn.stored_user else 1
        turn.stored_reply = {"id": new_id("m"), "role": "model", "parent_id": parent_id, "created_at": stamp,
                             "parts": [], "model": choice.model.id, "status": "streaming",
                             **({"routing": choice.routing} if getattr(choice, "routing", None) else {}),
                             "_start_id": turn.first_event_id}

    def commit_turn(self, owner: str, turn: Turn, on_written: Callable[[], None] | None = None) -> None:
        """Lock, check the tree has not moved since the turn was planned, append its
        messages (one write, one fsync), unlock. `on_written` runs once the write is done,
        before the fsync: the reply's Gemini call is on its way as the disk catches up."""
        conversation_id = turn.conversation_id

        def done_writing() -> None:
            turn.unsure = True  # until the commit has ended well (see turn_kept)
            if on_written is not None:
                on_written()

        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            tree = MessageTree.of(document)
            dead = self._refuse_if_streaming(tree)
            if turn.kind == "send":
                last = tree.last()
                if (last["id"] if last else None) != turn.parent_id:
                    raise ApiError(409, "the conversation changed while this message was being prepared; "
                                        "send it again")
            stamp = now_iso()
            records = [record(0, "reply", stamp, id=m["id"], fields={"status": "interrupted"})
                       for m in dead]
            if turn.stored_user:
                records.append(record(0, "message", stamp, message=turn.stored_user))
            reply = {**turn.stored_reply, "_writer": new_writer()}
            records.append(record(0, "message", stamp, message=reply))
            mark = self._append(owner, conversation_id, document, records, tree, on_written=done_writing)
            turn.position = mark["position"]
            link = self.link(owner)
            turn.user_message = message_view(tree.get(turn.stored_user["id"]), tree, link) if turn.stored_user else None
            turn.reply = message_view(tree.get(reply["id"]), tree, link)
        turn.unsure = False

    def turn_kept(self, owner: str, turn: Turn) -> bool:
        """Whether a turn's records are stored. Ask under the conversation's lock: a reply's end
        asks it there, and stores nothing for a turn whose commit failed without storing it (a
        COMMIT rolled back, records the disk did not keep and the store took back)."""
        if not turn.persist:
            return False
        if not turn.unsure:
            return True
        try:
            document = self.load(owner, turn.conversation_id)
        except ApiError:
            return False
        return any(m["id"] == turn.stored_reply["id"] for m in document["messages"])

    def checkpoint(self, owner: str, conversation_id: str, reply_id: str, events: list) -> dict | None:
        """Append a reply's progress (no fsync: a killed process loses nothing written).
        Returns the store's mark; None when the conversation is gone."""
        try:
            with self.store.locked(owner, conversation_id, existing=True):
                return self.store.append(owner, conversation_id,
                                         [record(0, "progress", now_iso(), id=reply_id, events=events)], sync=False)
        except (Missing, LockTimeout):
            return None

    def finish_reply(self, owner: str, conversation_id: str, reply_id: str, events: list, fields: dict,
                     text: str | None = None, kept: Callable[[], bool] | None = None) -> bool:
        """Store how a reply ended (with its last events); False when the conversation is gone,
        LockTimeout when it stayed locked. `text`: the reply's text, for the search index (else
        read back). `kept()`, asked under the lock: whether the reply's turn is stored (see
        `turn_kept`: its commit may have failed as this end waited). When the records have
        outgrown the snapshot, fold them into a new one."""
        try:
            with self.store.locked(owner, conversation_id, existing=True):
                if kept is not None and not kept():
                    return False
                mark = self.store.append(owner, conversation_id, [record(0, "reply", now_iso(), id=reply_id,
                                                                         events=events, fields=fields)],
                                         reply_texts={reply_id: text} if text is not None else None)
                if self.store.needs_compaction(mark):
                    self._compact(owner, conversation_id, self.store.read(owner, conversation_id))
            return True
        except Missing:
            return False

    def request_stop(self, owner: str, conversation_id: str, reply_id: str) -> tuple[dict, bool]:
        """(the reply as stored, whether it is still being written). A stop request is
        recorded for its writer, whichever process that is."""
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            tree = MessageTree.of(document)
            reply = self.reply_of(tree, reply_id)
            if reply.get("status") != "streaming" or not writer_alive(reply):
                return message_view(reply, tree, self.link(owner)), False
            if "_stop" not in reply:
                self._append(owner, conversation_id, document, [record(0, "stop", now_iso(), id=reply_id)],
                             sync=False)
            return message_view(reply, tree, self.link(owner)), True

    def force_stop(self, owner: str, conversation_id: str, reply_id: str) -> dict:
        """Store a reply whose writer did not answer a stop as stopped, with what was checkpointed."""
        with self._locked(owner, conversation_id):
            document = self.load(owner, conversation_id)
            tree = MessageTree.of(document)
            reply = self.reply_of(tree, reply_id)
            if reply.get("status") == "streaming":
                self._append(owner, conversation_id, document,
                             [record(0, "reply", now_iso(), id=reply_id, fields={"status": "stopped"})])
                tree = MessageTree.of(document)
                reply = tree.get(reply_id)
            return message_view(reply, tree, self.link(owner))

    @staticmethod
    def reply_of(tree: MessageTree, reply_id: str) -> dict:
        reply = tree.get(reply_id)
        if reply is None or reply["role"] != "model":
            raise ApiError(404, f"reply '{reply_id}' not found")
        return reply
