"""Export, import and fork: whole conversations out of the store, into it, and copied from a point.

Export gives Apsara's own format (every version, the active branch, settings,
the files' records and with `inline` their bytes) or the active path as
Markdown. Import reads any known format (importing.py) and stores every
conversation of the request or none: a failure part way takes back what this
request stored, files included, and a worker killed part way has its import
taken back by the next process to look (pending.py). Nothing here reaches
another user's data: every read and write names the requesting owner.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import logging
import re
import threading
import time

import orjson
from marshmallow import ValidationError

from ..clock import new_id, now_iso
from ..conversations.manager import ConversationManager
from ..conversations.writers import HEARTBEAT_S, new_writer, writer_alive
from ..conversations.views import conversation_view, summary_view
from ..conversations.tree import ROOT, MessageTree
from ..errors import ApiError, _flatten
from ..files import FileStore
from ..schemas import ID_REGEX
from . import Imported, UnknownFormat, apsara_format, markdown
from .importing import InvalidExport, read_export

_ID = re.compile(ID_REGEX)  # used with fullmatch: `$` alone would let "x\n" through
log = logging.getLogger("apsara.imports")
# How often a process looks for imports whose writer died (a directory listing, or one query).
ABANDONED_CHECK_S = 30.0
_FILE_FIELDS = ("id", "filename", "mime_type", "size_bytes", "sha256", "created_at")


def file_ids(messages) -> list[str]:
    """Every file a message of these refers to, once each, in order."""
    found = {}
    for message in messages:
        for part in message.get("parts", ()):
            if part.get("type") == "file" and part.get("file_id"):
                found[part["file_id"]] = True
    return list(found)


def _unstorable_at(value, path: str) -> str | None:
    """Where in `value` (JSON as parsed) lies what the store's JSON cannot hold (an integer
    past 64 bits, in a field kept as it came: usage, grounding, a function's arguments...)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return path if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 64 else None
    for key, item in items:
        found = _unstorable_at(item, f"{path}.{key}")
        if found is not None:
            return found
    return None


def _check_storable(imported: Imported, prefix: str) -> None:
    for where, value in [("conversation", imported.header)] + [
            (f"messages.{k}", message) for k, message in enumerate(imported.messages)]:
        try:
            orjson.dumps(value)
        except TypeError:
            path = _unstorable_at(value, f"{prefix}{where}") or f"{prefix}{where}"
            raise _refuse({path: ["Cannot be stored: a whole number past 64 bits."]}) from None


def _refuse(problems: dict) -> ApiError:
    problems = _flatten(problems)
    first_path, first_messages = next(iter(problems.items()))
    return ApiError(422, f"not a valid export: {first_path}: {first_messages[0]}", problems)


class Transfers:
    def __init__(self, manager: ConversationManager, files: FileStore, pending):
        self.manager = manager
        self.files = files
        self.pending = pending  # pending.PendingImportFiles or PendingImportRows
        self._next_check = 0.0

    # -- export ---------------------------------------------------------------------------
    def export_json(self, owner: str, conversation_id: str, inline: bool) -> dict:
        document = self.manager.load(owner, conversation_id)
        records = []
        for file_id in file_ids(document.get("messages", ())):
            meta = self.files.get(owner, file_id)
            if meta is None:
                continue  # a reference to a file that is gone: the parts still name it
            record = {k: meta[k] for k in _FILE_FIELDS if k in meta}
            if inline:
                record["data"] = base64.b64encode(self.files.read_bytes(owner, file_id)).decode("ascii")
            records.append(record)
        exported = apsara_format.export_document(document, records)
        exported["conversation"] = {**summary_view(exported["conversation"]),
                                    "message_count": document["conversation"].get("message_count", 0)}
        exported["conversation"].pop("temporary", None)
        return {**exported, "exported_at": now_iso()}

    def export_markdown(self, owner: str, conversation_id: str) -> str:
        document = self.manager.load(owner, conversation_id)
        return markdown.render(document, self.manager.link(owner))

    # -- import ---------------------------------------------------------------------------
    def import_document(self, owner: str, document) -> tuple[list[dict], dict]:
        """Store every conversation of an export, or none. Returns (summaries, skipped counts)."""
        try:
            batch = read_export(document)
        except InvalidExport as refused:
            raise _refuse(refused.problems) from None
        except UnknownFormat:
            raise ApiError(422, "not an export this server can read: send an Apsara export, a ChatGPT "
                                "conversations.json or an Open WebUI export",
                           {"_body": ["not an Apsara, ChatGPT or Open WebUI export"]}) from None
        for n, imported in enumerate(batch.conversations):
            prefix = f"{n}." if isinstance(document, list) else ""
            self._check_choices(imported, prefix)
            _check_storable(imported, prefix)
        # A retry after a killed import: what the killed one stored goes first, and its ids with it.
        self.take_back_abandoned(owner)
        entry = {"token": new_id("i"), "owner": owner, "conversations": self._planned_ids(owner, batch),
                 "writer": new_writer()}
        self.pending.write(entry)  # before the first conversation: a crash from here on is taken back
        stored_ids, restored_files, summaries = [], [], []
        try:
            with self._heartbeat(entry):
                for n, imported in enumerate(batch.conversations):
                    renamed = self._restore_files(owner, imported, n, restored_files)
                    document = self._document(imported, renamed)
                    document["conversation"]["_import"] = entry["token"]
                    stored = self._store(owner, document, entry, n)
                    stored_ids.append(stored["conversation"]["id"])
                    summaries.append(summary_view(stored["conversation"]))
            if not self.pending.remove(entry["token"]):
                # Another process judged this one dead (a stall past the writers' silence) and
                # took the import back meanwhile: what it stored is gone.
                raise ApiError(503, "the import was interrupted and taken back; send it again")
        except BaseException:
            for file_id in restored_files:
                with contextlib.suppress(Exception):
                    self.files.delete(owner, file_id)
            self._take_back(entry, stored_ids)
            raise
        skipped = {"messages": batch.skipped_messages, "conversations": batch.skipped_conversations}
        return summaries, skipped

    @contextlib.contextmanager
    def _heartbeat(self, entry: dict):
        """The entry says its writer lives, every HEARTBEAT_S while the import runs: other machines
        judge a writer by that (a conversation's inline files may take longer than their patience)."""
        done = threading.Event()

        def beat():
            while not done.wait(HEARTBEAT_S):
                entry["writer"] = {**entry["writer"], "seen": now_iso()}
                try:
                    self.pending.write(entry)
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    log.warning("could not renew an import's entry (%s)", type(exc).__name__)

        thread = threading.Thread(target=beat, name="apsara-import-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _planned_ids(self, owner: str, batch) -> list[str]:
        """The id each conversation will be stored under: its own when valid and free, else a new one."""
        planned, taken = [], set()
        for imported in batch.conversations:
            wanted = imported.id if imported.id and _ID.fullmatch(imported.id) else None
            if wanted is None or wanted in taken or self.manager.store.exists(owner, wanted):
                wanted = new_id()
            taken.add(wanted)
            planned.append(wanted)
        return planned

    def _store(self, owner: str, document: dict, entry: dict, n: int) -> dict:
        """Store the n-th conversation under its planned id; one taken meanwhile is replaced in
        the entry, before the conversation is stored under the new one."""
        for _attempt in range(5):
            try:
                return self.manager.store_new(owner, document, entry["conversations"][n], exact=True)
            except ApiError as refused:
                if refused.code != 409:
                    raise
            entry["conversations"][n] = new_id()
            self.pending.write(entry)
        raise ApiError(500, "could not pick a free conversation id")

    def take_back_abandoned(self, owner: str | None = None) -> int:
        """Take back what imports whose writer died had stored; returns how many conversations.
        Every user's on requests, at most every ABANDONED_CHECK_S in each process; one user's at
        once as an import of theirs starts."""
        if owner is None:
            now = time.monotonic()
            if now < self._next_check:
                return 0
            self._next_check = now + ABANDONED_CHECK_S
        removed = 0
        for entry in self.pending.entries():
            if owner not in (None, entry.get("owner")) or writer_alive({"_writer": entry.get("writer")}):
                continue
            taken = self._take_back(entry, entry.get("conversations", ()))
            removed += taken
            log.warning("took back an import that never ended: %d conversation(s) of %s", taken, entry["owner"])
        return removed

    def _take_back(self, entry: dict, conversation_ids) -> int:
        """Remove those of `conversation_ids` that bear the entry's mark, then the entry; returns
        how many were removed. One that cannot be removed now (its lock busy, the database away)
        keeps the entry, marked as written by nobody: the next look of any process finishes."""
        removed, kept = 0, False
        for conversation_id in conversation_ids:
            try:
                removed += self.manager.remove(entry["owner"], conversation_id, only_import=entry["token"])
            except Exception as exc:  # noqa: BLE001 - left for the next look
                log.warning("could not take back conversation %s of an import (%s)", conversation_id,
                            type(exc).__name__)
                kept = True
        try:
            if kept:
                self.pending.write({**entry, "writer": None})
            else:
                self.pending.remove(entry["token"])
        except Exception as exc:  # noqa: BLE001 - its writer's death hands it to the next look
            log.warning("could not update an import's entry (%s)", type(exc).__name__)
        return removed

    @staticmethod
    def _check_choices(imported: Imported, prefix: str) -> None:
        """Settings and tools become what the next turn sends: checked as a request's are."""
        from ..schemas import SettingsSchema, _known_tools

        problems = {}
        try:
            imported.header["settings"] = SettingsSchema().load(imported.header.get("settings") or {})
        except ValidationError as error:
            for key, messages in error.normalized_messages().items():
                problems[f"{prefix}conversation.settings.{key}"] = messages if isinstance(messages, list) \
                    else [str(messages)]
        try:
            _known_tools(imported.header.get("tools") or [])
        except ValidationError as error:
            problems[f"{prefix}conversation.tools"] = error.messages
        if problems:
            raise _refuse(problems)

    def _restore_files(self, owner: str, imported: Imported, n: int, restored: list[str]) -> dict[str, str]:
        """Store an export's inline files; returns old id -> new id for the ones stored under another id."""
        renamed = {}
        for k, record in enumerate(imported.files):
            if "data" not in record:
                # A reference only: it names a file of this user, or nothing. Marked in use, as a
                # message's attachment is, so that a cleanup running meanwhile keeps it.
                self.files.attach(owner, record["id"])
                continue
            meta = self.files.restore(owner, record, record["data"])
            if meta is None:
                path = f"{n}.files.{k}.data"
                raise ApiError(422, f"not a valid export: {path}: a type of file the models cannot read",
                               {path: ["a type of file the models cannot read"]})
            if meta.pop("restored", False):
                restored.append(meta["id"])
            if meta["id"] != record["id"]:
                renamed[record["id"]] = meta["id"]
        return renamed

    def _document(self, imported: Imported, renamed: dict[str, str]) -> dict:
        stamp = now_iso()
        messages = copy.deepcopy(imported.messages)
        for message in messages:
            for part in message.get("parts", ()):
                if part.get("type") == "file":
                    part["file_id"] = renamed.get(part.get("file_id"), part.get("file_id"))
                    part.pop("url", None)  # signed links die; a fresh one is made when shown
        header = {"title": "", "title_source": None, "created_at": stamp, "updated_at": stamp,
                  "model": self.manager.default_model(), "system_instruction": "", "tools": [], "settings": {},
                  "archived": False, "pinned": False}
        header.update({k: v for k, v in imported.header.items() if v is not None or k == "title_source"})
        if header["title"] and header["title_source"] is None:
            header["title_source"] = "user"
        header["temporary"] = False
        last = max([m.get("created_at", "") for m in messages] + [header["created_at"]])
        header["updated_at"] = max(header["updated_at"], last)
        return {"conversation": header, "messages": messages, "active": dict(imported.active)}

    # -- fork -----------------------------------------------------------------------------
    def fork(self, owner: str, conversation_id: str, body: dict) -> dict:
        """A new conversation holding the path from the root to `message_id`, with new message ids,
        the same model, instruction, tools and settings, and the same files (shared, not copied)."""
        source = self.manager.load(owner, conversation_id)
        tree = MessageTree.of(source)
        node = tree.get(body["message_id"])
        if node is None:
            raise ApiError(404, f"message '{body['message_id']}' not found")
        path = []
        while node is not None:
            path.append(node)
            node = tree.get(node["parent_id"]) if node["parent_id"] else None
        path.reverse()
        messages, active, parent = [], {}, None
        for original in path:
            message = {k: copy.deepcopy(v) for k, v in original.items() if not k.startswith("_")}
            message.pop("last_event_id", None)
            message.update(id=new_id("m"), parent_id=parent)
            if message.get("status") == "streaming":
                message["status"] = "interrupted"  # the copy has no writer: it shows what had arrived
            messages.append(message)
            active[parent or ROOT] = message["id"]
            parent = message["id"]
        stamp = now_iso()
        header = {k: copy.deepcopy(v) for k, v in source["conversation"].items() if not k.startswith("_")}
        header.update(created_at=stamp, updated_at=stamp, archived=False, pinned=False,
                      temporary=bool(body.get("temporary")))
        header.setdefault("title_source", "user" if header.get("title") else None)
        if body.get("title"):
            header.update(title=body["title"], title_source="user")
        stored = self.manager.store_new(owner, {"conversation": header, "messages": messages, "active": active},
                                        body.get("id"), exact=body.get("id") is not None)
        return conversation_view(stored, link=self.manager.link(owner))
