"""Running a reply: the Gemini call, the server functions it asks for, and how it ends.

`launch()` commits a planned turn (lock, check, append, unlock) and starts its
job thread once the write is done, before the fsync: the fsync runs while Gemini
answers (see `durable.on_disk_threads`); the caller sends its first byte once
both are done.
The job publishes events as Gemini answers (`reply_start`, `delta`, `thought`,
`part`, `grounding`), and ends with `done` or `error` carrying the reply as
stored: complete, blocked, stopped (a stop request closed the Gemini request),
or error with what had arrived.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import Iterator

from ..attachments import Attachments
from ..config import Settings
from ..conversations.manager import ConversationManager, Turn
from ..conversations.views import message_view
from ..conversations.writers import abandon
from ..errors import ApiError
from ..function_calls import FunctionCalls
from ..gemini.client import GeminiClient
from ..gemini.errors import to_api_error
from ..gemini.replies import ReplyBuilder
from ..gemini.requests import request_config, send, stale_reference, uses_cache, with_function_results
from ..gemini.upstream import watched
from ..search import message_text
from .jobs import Job, JobRegistry
from .planner import TurnPlanner
from .titles import TitleWriter

log = logging.getLogger("apsara.replies")
# Pauses between tries at storing a reply's end; the last one repeats until the write lands.
END_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 10.0)
_UNPARSED = object()


def _parse_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return _UNPARSED


class ReplyRunner:
    def __init__(self, manager: ConversationManager, planner: TurnPlanner, gemini: GeminiClient,
                 attachments: Attachments, function_calls: FunctionCalls, settings: Settings, jobs: JobRegistry,
                 titles: TitleWriter | None = None):
        self.manager = manager
        self.planner = planner
        self.gemini = gemini
        self.attachments = attachments
        self.function_calls = function_calls
        self.settings = settings
        self.jobs = jobs
        self.titles = titles

    # -- starting ---------------------------------------------------------------------
    def launch(self, owner: str, turn: Turn, stream: bool) -> Job:
        """Store the turn's messages and start its reply; returns the running job."""
        job = Job(owner, turn.conversation_id, turn.stored_reply["id"], turn.first_event_id, turn.persist)
        thread = threading.Thread(target=self._run, args=(owner, turn, job, stream), name="apsara-reply",
                                  daemon=True)
        if not turn.persist:
            turn.reply = message_view(turn.stored_reply, link=self.manager.link(owner))
            thread.start()
            return job
        written = []

        def start() -> None:  # the turn's records are written
            written.append(True)
            thread.start()

        try:
            self.manager.commit_turn(owner, turn, on_written=start)
        except BaseException:
            if thread.ident is not None:
                job.stop()  # written but not made durable: nothing to show for it
            else:
                if turn.bill is not None:
                    turn.bill.settle()  # refused (409, 404), or no thread: free what the plan reserved
                if written:  # stored, but its thread never started: end it here, or it stays "streaming"
                    self._end_unstarted(owner, turn, job)
            raise
        job.position = turn.position  # the watcher reads on from here, not the whole file
        self.jobs.add(job)
        if self.titles is not None:
            self.titles.start(owner, turn, job)
        return job

    def _end_unstarted(self, owner: str, turn: Turn, job: Job) -> None:
        """A reply stored as streaming whose thread could not start: while its process lives, the
        conversation would refuse every next message."""
        self._end(owner, turn, job, ReplyBuilder(), {"status": "error"}, ApiError(500, "internal error"))

    # -- running ------------------------------------------------------------------------
    def _run(self, owner: str, turn: Turn, job: Job, stream: bool) -> None:
        start = {"id": job.reply_id, "model": turn.stored_reply["model"]}
        if turn.stored_reply.get("routing"):
            start["routing"] = turn.stored_reply["routing"]
        job.publish("reply_start", start)
        builder = ReplyBuilder(on_inline=self.attachments.image_saver(owner))
        error: ApiError | None = None
        try:
            with watched(job.upstream):
                events = self._call(owner, turn, builder, stream, job)
                try:
                    for name, data in events:
                        # A bare thought signature is kept for Gemini, never shown.
                        job.publish(name, data, shown=not (name in ("delta", "thought") and not data["text"]))
                        if job.stop_requested:
                            break
                finally:
                    events.close()
            fields, error = builder.outcome()
        except Exception as exc:  # every failure is stored on the reply and told to the client
            fields = self._partial(builder)
            if not job.stop_requested:
                error = to_api_error(exc, self.gemini.secret)
                if error.code >= 500 and not isinstance(exc, ApiError):
                    log.warning("Gemini call failed: %s (%s)", error.message, type(exc).__name__)
                fields["status"] = "error"
        if job.stop_requested:
            fields, error = {**self._partial(builder), "status": "stopped"}, None
        if turn.bill is not None:
            turn.bill.settle()  # budget hook: the calls are in the ledger; free the rest before the end is told
        try:
            self._end(owner, turn, job, builder, fields, error)
        finally:
            self.jobs.remove(job)

    def _call(self, owner: str, turn: Turn, builder: ReplyBuilder, stream: bool, job: Job) -> Iterator[tuple[str, dict]]:
        """Call Gemini, run the functions it asks for (a bounded number of rounds),
        yield events. Retried once, before any output, if an upload or cache had expired."""
        choice = turn.choice
        for attempt in (1, 2):
            contents, config = turn.request if attempt == 1 and turn.request else \
                self.planner.request_for(owner, turn)
            try:
                for step in range(self.settings.max_function_steps + 1):
                    if step and turn.bill is not None and turn.bill.holding:
                        # Held against the budget as the first call was. A 429 here ends
                        # the turn, keeping the parts made so far.
                        turn.bill.renew([choice.model], self.planner.estimate_tokens(
                            choice.system_instruction, turn.context + [{"parts": builder.parts}]),
                            choice.settings.get("max_output_tokens"))
                    first_new = len(builder.parts)
                    yield from send(self.gemini, choice.model.id, contents, config, builder, stream, turn.bill)
                    step_parts = builder.parts[first_new:]
                    calls = [p for p in step_parts if p["type"] == "function_call"]
                    if not calls or builder.cut or job.stop_requested:
                        return
                    last_round = step == self.settings.max_function_steps - 1
                    results, pictures = [], []
                    for call in calls:
                        result, made = self.function_calls.run(owner, turn, call, builder, last_round)
                        results.append(result)
                        pictures += made
                    # Stored and shown in this order: the calls, their results, then any pictures.
                    for part in results + pictures:
                        yield builder.add(part)
                    contents = with_function_results(contents, step_parts, results)
                    # The model must answer now, without calling anything (a cached
                    # request keeps its tool config: the note in the results says so).
                    if last_round and not uses_cache(config):
                        config = request_config(choice, self.function_calls.declarations(choice),
                                                functions_allowed=False)
                return
            except Exception as exc:
                # Gemini forgets uploads after 48 hours and caches when they expire:
                # upload or cache again and retry, once, if nothing was shown yet.
                stale = stale_reference(exc)
                if attempt == 2 or builder.parts or stale is None or job.stop_requested:
                    raise
                if stale == "cache" and turn.header.get("_cache"):
                    self.planner.save_cache_record(owner, turn, None)
                elif not (stale == "file" and self.attachments.forget_uploads(owner, turn.context)):
                    raise

    @staticmethod
    def _partial(builder: ReplyBuilder) -> dict:
        return {"finish_reason": builder.finish_reason, "usage": builder.usage, "grounding": builder.grounding}

    # -- ending -------------------------------------------------------------------------
    def _end(self, owner: str, turn: Turn, job: Job, builder: ReplyBuilder, fields: dict,
             error: ApiError | None) -> None:
        """Store how the reply ended and tell its followers.

        A write that fails for a passing reason (a full disk, the lock held too long, the
        database away) is tried again until it lands: what the user read since the last
        checkpoint is only in memory, and until then every process sees the reply streaming,
        its writer (this one) alive. The followers are told of the trouble after the first
        tries, not kept waiting on a disk; the reply is stored as it ended once the write
        goes through. Any other failure gives the reply up at once (writers.abandon)."""
        transient = self.manager.store.transient_errors
        for attempt in itertools.count():
            try:
                self._finish(owner, turn, job, builder, fields, error)
                return
            except transient as exc:
                if attempt == len(END_RETRY_DELAYS_S):
                    log.error("storing reply %s keeps failing (%s); trying on every %.0f s", job.reply_id,
                              exc, END_RETRY_DELAYS_S[-1])
                    self._tell_failure(owner, turn, job, builder)
                elif attempt < len(END_RETRY_DELAYS_S):
                    log.warning("storing reply %s failed (%s); trying again", job.reply_id, type(exc).__name__)
                time.sleep(END_RETRY_DELAYS_S[min(attempt, len(END_RETRY_DELAYS_S) - 1)])
            except Exception:  # noqa: BLE001 - a job must end whatever happens
                log.exception("storing reply %s failed; given up", job.reply_id)
                abandon(job.reply_id)
                self._tell_failure(owner, turn, job, builder)
                return

    def _tell_failure(self, owner: str, turn: Turn, job: Job, builder: ReplyBuilder) -> None:
        with job.flush_lock:  # the event id is taken as the ending's is
            if not job.ended:  # its followers would wait forever
                view = message_view({**turn.stored_reply, "parts": builder.parts, "status": "error"},
                                    link=self.manager.link(owner))
                job.tell_failure({"error": ApiError(500, "internal error").to_dict()["error"], "reply": view},
                                 job.next_id())

    def _finish(self, owner: str, turn: Turn, job: Job, builder: ReplyBuilder, fields: dict,
                error: ApiError | None) -> None:
        # Parts are the fold of the events, already stored with them; only a block empties them.
        fields = {k: v for k, v in fields.items() if k != "parts"}
        if fields.get("status") == "blocked":
            fields["parts"] = []
        if error is not None:
            fields["error"] = {"code": error.code, "status": error.status, "message": error.message}
        elif turn.choice.settings.get("response_mime_type") == "application/json":
            parsed = _parse_json("".join(p.get("text", "") for p in builder.parts if p["type"] == "text"))
            if parsed is not _UNPARSED:
                fields["parsed"] = parsed
        name = "done" if error is None else "error"
        stored = {**turn.stored_reply, "parts": builder.parts, **fields}
        turn.error = error
        with job.flush_lock:
            final_id = job.next_id()
            last = [final_id, name] if error is None else [final_id, name, {"error": error.to_dict()["error"]}]
            if turn.persist:
                taken_at = time.monotonic()
                events, upto = job.unflushed()
                self.manager.finish_reply(owner, turn.conversation_id, job.reply_id, events + [last], fields,
                                          text=message_text(stored),
                                          kept=lambda: self.manager.turn_kept(owner, turn))
                job.written(upto, taken_at)
            view = message_view({**stored, "last_event_id": final_id}, link=self.manager.link(owner))
            if turn.reply is not None:
                view["siblings"] = turn.reply.get("siblings", view["siblings"])
            data = view if error is None else {"error": error.to_dict()["error"], "reply": view}
            if not job.ended:  # told of a trouble storing it, while the write was tried again
                job.end(name, data, final_id)
