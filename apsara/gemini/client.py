"""The one long-lived google-genai client of this worker process.

Made lazily on first use and again if the process id changed (Gunicorn forks
workers after import with --preload), never at import time. Keeping it alive for
the process's life matters: a collected client closes its HTTP pool and any
stream still reading from it fails.
"""
from __future__ import annotations

import logging
import os
import threading

import httpx2
from google import genai
from google.genai import types

from ..config import Settings
from . import extra_fields, field_lookup, metering, type_check, wire
from .upstream import stoppable_transport

log = logging.getLogger("apsara.gemini")

# Statuses worth another try before the first byte: the SDK never retries mid-stream.
RETRY_STATUSES = [408, 429, 500, 502, 503, 504]
# A bound on models.list pages (100 models each), in case a page token never ends.
MAX_MODEL_PAGES = 20
# The SDK's types build their validators on first use, and a reply meets these: building
# them all took its first reply in each worker ~35 ms more than the next ones.
REPLY_TYPES = ("HttpOptions", "HttpResponse", "GenerateContentConfig", "ThinkingConfig",
               "_GenerateContentParameters", "Content", "UserContent", "Part",
               "GenerateContentResponse", "Candidate", "GenerateContentResponseUsageMetadata")


def speed_up_sdk() -> None:
    """Make google-genai build its requests and read Gemini's answers for less CPU, with the
    same results: its field lookup (half its CPU on a long history), its pre-validation type
    check (a quarter of what was left) and its pruning of unknown answer fields (two thirds
    of a streamed chunk's). Each is put in only over the SDK code it was written for."""
    field_lookup.install()
    type_check.install()
    extra_fields.install()


def build_reply_types() -> None:
    for name in REPLY_TYPES:
        model = getattr(types, name, None)
        if model is not None:
            model.model_rebuild()


class GeminiClient:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._client: genai.Client | None = None
        self._pid: int | None = None
        # Told about every generate call when it ends (the usage ledger and metrics).
        self.on_call = None

    @property
    def configured(self) -> bool:
        return bool(self._settings.gemini_api_key)

    @property
    def secret(self) -> str | None:
        """The key, only so error messages can be scrubbed of it."""
        return self._settings.gemini_api_key

    def http_options(self) -> types.HttpOptions:
        s = self._settings
        return types.HttpOptions(
            base_url=s.gemini_base_url,
            api_version=s.gemini_api_version,
            # Milliseconds, and per read: it also bounds silence inside a stream.
            timeout=int(s.gemini_timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=s.gemini_retry_attempts, initial_delay=0.5, max_delay=8.0,
                http_status_codes=RETRY_STATUSES),
            # The default pool holds 100 connections: one worker streaming more
            # replies than that would queue the rest behind them.
            # A transport that lets a stopped reply close its request (upstream.py).
            client_args={"transport": stoppable_transport(limits=httpx2.Limits(
                max_connections=s.gemini_max_connections, max_keepalive_connections=100))},
        )

    def warm_up(self) -> None:
        """What a worker's first reply would otherwise wait for: the client (~70 ms: its TLS
        context) and the validators of the SDK types a reply meets. Call after the fork.
        A failure here is only logged: the first reply would meet it again, and say so."""
        try:
            build_reply_types()
            if self.configured:
                self.sdk  # noqa: B018 - made now, kept for the process's life
        except Exception:  # noqa: BLE001
            log.warning("warming up the Gemini client failed", exc_info=True)

    @property
    def sdk(self) -> genai.Client:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    speed_up_sdk()
                    self._client = genai.Client(api_key=self._settings.gemini_api_key,
                                                http_options=self.http_options())
                    self._pid = pid
        return self._client

    def generate(self, model: str, contents, config=None, *, billed_to=None, purpose: str = "reply"):
        """One generate call, reported to `on_call` when it ends."""
        return metering.generate(self.sdk, self.on_call, model, self._handed_over, contents, config,
                                 billed_to=billed_to, purpose=purpose)

    def stream(self, model: str, contents, config=None, *, billed_to=None, purpose: str = "reply"):
        """A streamed generate call, reported to `on_call` when it ends, stopped or not."""
        return metering.stream(self.sdk, self.on_call, model, self._handed_over, contents, config,
                               billed_to=billed_to, purpose=purpose)

    def _handed_over(self, contents, config):
        """What the SDK is handed for a request: its history as JSON made once (wire.py)."""
        return wire.request(contents, config, vertex=bool(self.sdk.vertexai))

    def list_models(self) -> list[dict]:
        """The live model list as plain dicts for the catalog, every page of it.

        Paged by hand: the SDK's own iterator raises IndexError when the listing
        ends with an empty page, which Gemini sends when the last page is full.
        """
        found = []
        pager = self.sdk.models.list(config={"page_size": 100})
        for _page in range(MAX_MODEL_PAGES):
            for model in pager.page:
                found.append({
                    "id": (model.name or "").removeprefix("models/"),
                    "display_name": model.display_name,
                    "description": model.description,
                    "input_token_limit": model.input_token_limit,
                    "output_token_limit": model.output_token_limit,
                    "actions": model.supported_actions,
                    "thinking": model.thinking,
                })
            if not pager.config.get("page_token"):
                break
            pager.next_page()
        return found
