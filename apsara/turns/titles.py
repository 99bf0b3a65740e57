"""Automatic titles: the first turn of a conversation the user named not gets a title in the background.

Started with the first reply and run beside it, so it never delays or fails the
turn: a cheap model (APSARA_TITLE_MODEL, else the `lite` tier of the auto
router) names the conversation from the user's first message. The title is
stored only while the conversation still has none (a user's title always wins),
marked `title_source: "auto"`, and told to the turn's stream as a `title` event
if that stream is still open.
"""
from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..conversations.manager import ConversationManager, Turn
from ..gemini.client import GeminiClient
from ..gemini.titles import write_title
from ..routing.router import Router
from ..search import message_text
from .jobs import Job

log = logging.getLogger("apsara.titles")


class TitleWriter:
    def __init__(self, manager: ConversationManager, gemini: GeminiClient, router: Router, settings: Settings):
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
        try:
            model = self.settings.title_model or self.router.tier_model("lite")
            if model is None:
                return
            title, _usage = write_title(self.gemini, model, message_text(turn.stored_user), "",
                                        self.settings.title_timeout_s)
            if title and self.manager.set_auto_title(owner, turn.conversation_id, title):
                job.publish_while_running("title", {"title": title})
        except Exception:  # a title is a nicety: nothing may come of a failure but this line
            log.exception("writing a title failed")
