"""One turn of a conversation, from the views' side: plan it, run it as a job, follow it, stop it.

`Chat.start(...)` plans a turn without the conversation's lock (turns/planner.py)
and refuses what cannot run, storing nothing. `Chat.launch(turn)` stores the user
message and an empty reply marked `streaming`, and starts the reply's job
(turns/runner.py); `follow` gives its events to any client of any process, and
`stop` ends it from any process. Nothing here knows HTTP or google.genai.
"""
from __future__ import annotations

import time
from typing import Iterator

from .attachments import Attachments
from .config import Settings
from .conversations.manager import ConversationManager, Turn
from .conversations.views import message_view
from .conversations.tree import MessageTree
from .files import FileStore
from .function_calls import FunctionCalls
from .gemini.catalog import ModelCatalog
from .gemini.client import GeminiClient
from .routing.router import Router
from .turns import follow
from .turns.jobs import Job, JobRegistry
from .turns.planner import TurnPlanner
from .turns.runner import ReplyRunner
from .turns.titles import TitleWriter
from .usage import UsageService

STOP_WAIT_S = 3.0  # how long a stop waits for another process's writer before storing it itself


class Chat:
    def __init__(self, manager: ConversationManager, catalog: ModelCatalog, gemini: GeminiClient,
                 files: FileStore, settings: Settings, router: Router, usage: UsageService):
        self.manager = manager
        self.usage = usage
        self.settings = settings
        self.attachments = Attachments(files, gemini)
        self.function_calls = FunctionCalls(self.attachments, catalog, gemini, settings.image_model)
        self.planner = TurnPlanner(manager, catalog, gemini, self.attachments, self.function_calls, settings, router,
                                   usage)
        self.jobs = JobRegistry(manager)
        self.runner = ReplyRunner(manager, self.planner, gemini, self.attachments, self.function_calls, settings,
                                  self.jobs, TitleWriter(manager, gemini, router, settings, usage))

    # -- turns --------------------------------------------------------------------------
    def start(self, owner: str, conversation_id: str, **options) -> Turn:
        return self.planner.plan(owner, conversation_id, **options)

    def start_stateless(self, owner: str, body: dict) -> Turn:
        return self.planner.plan_stateless(owner, body)

    def launch(self, owner: str, turn: Turn, stream: bool) -> Job:
        return self.runner.launch(owner, turn, stream)

    # -- following and stopping ----------------------------------------------------------
    def follow(self, owner: str, conversation_id: str, reply_id: str, after: int) -> Iterator:
        """A reply's events after id `after`, then live until it ends (see turns/follow.py)."""
        self._reply_view(owner, conversation_id, reply_id)  # 404 for what is not a reply here
        job = self.jobs.get(owner, conversation_id, reply_id)
        if job is not None:
            return follow.from_job(job, after, self.manager.link(owner), self.settings.ping_interval_s)
        return follow.from_file(self.manager, owner, conversation_id, reply_id, after, self.settings.ping_interval_s)

    def stop(self, owner: str, conversation_id: str, reply_id: str) -> dict:
        """Stop a reply from any process; returns it as stored (unchanged if it had ended)."""
        job = self.jobs.get(owner, conversation_id, reply_id)
        if job is not None:
            job.stop()
            result = job.wait(STOP_WAIT_S)
            if result is not None:
                name, data = result
                return data if name == "done" else data["reply"]
        reply, running = self.manager.request_stop(owner, conversation_id, reply_id)
        deadline = time.monotonic() + STOP_WAIT_S
        while running and time.monotonic() < deadline:
            time.sleep(0.02)  # its writer, in another process, stores it within a watcher period
            reply = self._reply_view(owner, conversation_id, reply_id)
            running = reply["status"] == "streaming"
        return self.manager.force_stop(owner, conversation_id, reply_id) if running else reply

    def _reply_view(self, owner: str, conversation_id: str, reply_id: str) -> dict:
        document = self.manager.load(owner, conversation_id)
        tree = MessageTree.of(document)
        return message_view(self.manager.reply_of(tree, reply_id), tree, self.manager.link(owner))

    # -- the rest ---------------------------------------------------------------------------
    def conversation_tokens(self, owner: str, conversation_id: str) -> dict:
        return self.planner.conversation_tokens(owner, conversation_id)

    def preview_route(self, owner: str, body: dict) -> dict:
        return self.planner.preview_route(owner, body)

    def delete_conversation(self, owner: str, conversation_id: str) -> None:
        self.planner.delete_conversation(owner, conversation_id)
        self.jobs.stop_all(owner, conversation_id)  # this process's at once; other processes' watchers see it
