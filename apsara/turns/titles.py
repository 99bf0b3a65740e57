"""Automatic titles: the first turn of a conversation the user named not gets a title in the background.

Started with the first reply and run beside it, so it never delays or fails the
turn: a cheap model (APSARA_TITLE_MODEL, else the `lite` tier of the auto
router) names the conversation from the user's first message. The title is
stored only while the conversation still has none (a user's title always wins),
marked `title_source: "auto"`, and told to the turn's stream as a `title` event
if that stream is still open. The call is billed to the user like a turn: a
budget that is spent refuses it (and the conversation simply keeps no title).
"""
from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..errors import ApiError
from ..conversations.manager import ConversationManager, Turn
from ..gemini.client import GeminiClient
from ..gemini.titles import write_title
from ..routing.router import Router
from ..search import message_text
from ..usage import UsageService
from .jobs import Job

log = logging.getLogger("apsara.titles")


class TitleWriter:
    def __init__(self, manager: ConversationManager, gemini: GeminiClient, router: Router, settings: Settings,
                 usage: UsageService):
        self.usage = usage
        self.manager = manager
        self.gemini = gemini
        self.router = router
        self.settings = settings

    @staticmethod
    def wanted(turn: Turn) -> bool:
        """The first message of a conversation without a title (send only)."""
        header = turn.header or {}
        return (turn.persist and turn.kind == "send" and turn.parent_id is None and turn.stored_user is not None
                and not header.get("title") and not header.get("title_source")
                and bool(message_text(turn.stored_user).strip()))

    def start(self, owner: str, turn: Turn, job: Job) -> None:
        if self.settings.auto_titles and self.wanted(turn):
            threading.Thread(target=self._write, args=(owner, turn, job), name="apsara-title", daemon=True).start()

    def _write(self, owner: str, turn: Turn, job: Job) -> None:
        bill = None
        try:
            model_id = self.settings.title_model or self.router.tier_model("lite")
            model = self.router.catalog.get(model_id) if model_id else None
            if model is None:
                return  # no such model offered: never ask for one
            bill = self.usage.bill(owner, turn.conversation_id)
            text = message_text(turn.stored_user)
            try:
                bill.hold([model], len(text) // 3 + 200, 256)
            except ApiError:
                return  # the user's budget is spent: no title
            title, _usage = write_title(self.gemini, model.id, text, "", self.settings.title_timeout_s, bill)
            if title and self.manager.set_auto_title(owner, turn.conversation_id, title):
                job.publish_while_running("title", {"title": title})
        except Exception:  # a title is a nicety: nothing may come of a failure but this line
            log.exception("writing a title failed")
        finally:
            if bill is not None:
                bill.settle()
